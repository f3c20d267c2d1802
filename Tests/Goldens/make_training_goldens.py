"""Training goldens (schedules, DINO loss and center, a 6-step trajectory), written by make_goldens.py."""
import numpy as np
import torch

from reference import (DINOHead, DINOLoss, MultiCropWrapper, VisionTransformer, cancel_gradients_last_layer,
                       clip_gradients, cosine_scheduler, cross_entropy_terms, get_params_groups, save_safetensors,
                       sinkhorn_knopp_teacher, koleo_loss)

TRAJECTORY = dict(batch=2, locals=2, epochs=3, iters=2, lr=0.128, min_lr=1e-5, warmup_epochs=1, wd=0.04, wd_end=0.4,
                  momentum=0.9, teacher_temp=0.07, warmup_teacher_temp=0.04, warmup_teacher_temp_epochs=2,
                  freeze_last_layer=1, clip=0.05)


def training_goldens():
    t = {}
    # Schedules, quirks included (inclusive warm-up linspace, per-epoch teacher temperature).
    t["schedule.lr"] = torch.tensor(cosine_scheduler(0.1, 1e-6, 3, 5, warmup_epochs=1), dtype=torch.float64)
    t["schedule.wd"] = torch.tensor(cosine_scheduler(0.04, 0.4, 3, 5), dtype=torch.float64)
    t["schedule.momentum"] = torch.tensor(cosine_scheduler(0.996, 1, 3, 5), dtype=torch.float64)
    t["schedule.teacher_temp"] = torch.tensor(DINOLoss(8, 4, 0.04, 0.07, 2, 5).teacher_temp_schedule, dtype=torch.float64)

    # The loss with centering and both temperatures: value, d/d(student), and the updated center.
    g = torch.Generator().manual_seed(3)
    b, views, k = 3, 4, 16
    student = (torch.randn(views * b, k, generator=g) * 3).double().requires_grad_()
    teacher = (torch.randn(2 * b, k, generator=g) * 3).double()
    center = torch.randn(1, k, generator=g).double()
    loss_fn = DINOLoss(k, views, 0.05, 0.05, 0, 1).double()
    loss_fn.center = center.clone()
    t["loss.student"], t["loss.teacher"], t["loss.center_in"] = student.detach().float(), teacher.float(), center.float()
    loss = loss_fn(student, teacher, 0)
    loss.backward()
    t["loss.value"], t["loss.grad"], t["loss.center_out"] = loss.detach().reshape(1), student.grad, loss_fn.center

    # The same student and teacher with Sinkhorn-Knopp targets (DINOv2's option) instead of centering.
    # Teacher logits of a cosine-similarity head lie in [-1, 1]; at temperature 0.05 they span e^±20.
    student.grad = None
    sk_teacher = torch.tanh(teacher / 3).float().double()
    targets = sinkhorn_knopp_teacher(sk_teacher, 0.05)
    sk_loss = cross_entropy_terms(student, targets, views)
    sk_loss.backward()
    t["sinkhorn.teacher"], t["sinkhorn.targets"] = sk_teacher.float(), targets
    t["sinkhorn.value"], t["sinkhorn.grad"] = sk_loss.detach().reshape(1), student.grad

    # KoLeo (DINOv2's regularizer) on a batch of 7 features of width 5.
    x = torch.randn(7, 5, generator=g).float().double().requires_grad_()
    koleo = koleo_loss(x)
    koleo.backward()
    t["koleo.input"], t["koleo.value"], t["koleo.grad"] = x.detach().float(), koleo.detach().reshape(1), x.grad

    # A short trajectory: official step, fixed inputs (no augmentation, no drop path).
    c = TRAJECTORY
    g = torch.Generator().manual_seed(4)
    torch.manual_seed(4)
    def build():
        return MultiCropWrapper(VisionTransformer(16, 4, 3, 32, 2, 4),
                                DINOHead(32, 40, norm_last_layer=True, nlayers=3, hidden_dim=48, bottleneck_dim=16))
    model = build()
    for n, p in model.state_dict().items():
        t["init." + (n[len("backbone."):] if n.startswith("backbone.") else n)] = p.clone()
    student = model.double()
    teacher_model = build().double()
    teacher_model.load_state_dict(student.state_dict())  # as main_dino.py: the teacher starts as the student
    for p in teacher_model.parameters():
        p.requires_grad = False
    niter = c["epochs"] * c["iters"]
    lr_s = cosine_scheduler(c["lr"] * c["batch"] / 256, c["min_lr"], c["epochs"], c["iters"], warmup_epochs=c["warmup_epochs"])
    wd_s = cosine_scheduler(c["wd"], c["wd_end"], c["epochs"], c["iters"])
    m_s = cosine_scheduler(c["momentum"], 1, c["epochs"], c["iters"])
    dino_loss = DINOLoss(40, 2 + c["locals"], c["warmup_teacher_temp"], c["teacher_temp"], c["warmup_teacher_temp_epochs"],
                         c["epochs"]).double()
    optimizer = torch.optim.AdamW(get_params_groups(student))
    losses, centers = [], []
    for it in range(niter):
        epoch = it // c["iters"]
        for i, group in enumerate(optimizer.param_groups):
            group["lr"] = lr_s[it]
            if i == 0:
                group["weight_decay"] = wd_s[it]
        globals_ = torch.randn(2 * c["batch"], 3, 16, 16, generator=g)
        locals_ = torch.randn(c["locals"] * c["batch"], 3, 8, 8, generator=g)
        t[f"step{it}.globals"], t[f"step{it}.locals"] = globals_, locals_
        gl, lo = globals_.double(), locals_.double()
        teacher_out = teacher_model([gl[:c["batch"]], gl[c["batch"]:]])
        student_out = student([gl[:c["batch"]], gl[c["batch"]:]] + list(lo.chunk(c["locals"])))
        loss = dino_loss(student_out, teacher_out, epoch)
        optimizer.zero_grad()
        loss.backward()
        clip_gradients(student, c["clip"])
        cancel_gradients_last_layer(epoch, student, c["freeze_last_layer"])
        optimizer.step()
        with torch.no_grad():
            for pq, pk in zip(student.parameters(), teacher_model.parameters()):
                pk.data.mul_(m_s[it]).add_((1 - m_s[it]) * pq.detach().data)
        losses.append(loss.item())
        centers.append(dino_loss.center.clone())
    t["trajectory.loss"] = torch.tensor(losses, dtype=torch.float64)
    t["trajectory.center"] = torch.cat(centers)
    for n, p in teacher_model.state_dict().items():
        t["final_teacher." + (n[len("backbone."):] if n.startswith("backbone.") else n)] = p
    for n, p in student.state_dict().items():
        t["final_student." + (n[len("backbone."):] if n.startswith("backbone.") else n)] = p
    save_safetensors("training.safetensors", t, {k: str(v) for k, v in c.items()})
    print("trajectory losses", losses)
