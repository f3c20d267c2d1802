import DinoKernels
import DinoModel
import DinoTraining
import Foundation
import TestSupport
import XCTest

/// The masked-patch (iBOT) term: the masked forward, the patch rows through the shared head and every
/// gradient against PyTorch (Tests/Goldens/masked.safetensors, make_goldens.py), the loss against
/// PyTorch and central differences, the masking's counts, and a training run that resumes exactly.
final class MaskedPatchTests: XCTestCase {
    let vit = GoldenModel.vit
    let head = GoldenModel.head(normLastLayer: false)

    /// Same tolerances as the unmasked model golden (outputs 1e-5, gradients 1e-4 of each tensor's
    /// scale): the masked path adds a row gather and a scatter, no new arithmetic.
    func testMaskedForwardAndEveryGradientMatchPyTorch() throws {
        for threads in [1, 2] {
            Parallel.setThreadCount(threads)
            defer { Parallel.setThreadCount(2) }
            let golden = try loadGolden("masked.safetensors")
            let layout = ParameterLayout.model(vit, head: head, maskToken: true)
            XCTAssertEqual(layout.entries.last?.name, "mask_token")
            let parameters = kept(FloatBuffer(count: layout.count)), gradients = kept(FloatBuffer(count: layout.count))
            try loadTensors(golden, prefix: "param.", into: parameters.pointer, layout: layout, path: "masked.safetensors")
            let transformer = VisionTransformer(config: vit, layout: layout)
            let dinoHead = DINOHead(config: head, layout: layout)
            let images = kept(FloatBuffer(golden.values("input.images")))
            let mask = golden.values("input.masks").map { UInt8($0) }
            let (batch, patches, d) = (4, 16, 32)
            let activations = transformer.makeActivations(batch: batch, imageHeight: 16, imageWidth: 16, training: true)
            var generator = RandomGenerator(seed: 0)
            mask.withUnsafeBufferPointer {
                transformer.forward(parameters: parameters.pointer, images: images.pointer, activations: activations,
                                    generator: &generator, patchMask: $0.baseAddress)
            }
            let rows = (0..<(batch * patches)).filter { mask[$0] != 0 }.map { ($0 / patches) * (patches + 1) + 1 + $0 % patches }
            XCTAssertEqual(rows.count, 9)

            let clsHead = HeadActivations(config: head, rows: batch), patchHead = HeadActivations(config: head, rows: batch * patches)
            activations.copyClassTokens(to: clsHead.inputPointer)
            patchHead.rows = rows.count
            let normalized = activations.normalized.pointer
            for (r, row) in rows.enumerated() { (patchHead.inputPointer + r * d).update(from: normalized + row * d, count: d) }
            dinoHead.forward(parameters: parameters.pointer, activations: clsHead)
            dinoHead.forward(parameters: parameters.pointer, activations: patchHead)
            assertClose(clsHead.logits.array, golden.values("output.cls_logits"), tolerance: 1e-5, "CLS logits")
            assertClose(Array(patchHead.logits.array.prefix(rows.count * 40)), golden.values("output.patch_logits"),
                        tolerance: 1e-5, "masked-patch logits")

            let dCLS = kept(FloatBuffer(count: batch * d)), dPatch = kept(FloatBuffer(count: rows.count * d))
            let upstreamCLS = kept(FloatBuffer(golden.values("upstream.cls"))), upstreamPatch = kept(FloatBuffer(golden.values("upstream.patch")))
            dinoHead.backward(gradients: gradients.pointer, dInput: dCLS.pointer, parameters: parameters.pointer,
                              dLogits: upstreamCLS.pointer, activations: clsHead)
            dinoHead.backward(gradients: gradients.pointer, dInput: dPatch.pointer, parameters: parameters.pointer,
                              dLogits: upstreamPatch.pointer, activations: patchHead)
            transformer.backward(gradients: gradients.pointer, parameters: parameters.pointer, dClassTokens: dCLS.pointer,
                                 activations: activations, tokenRows: rows, dTokens: dPatch.pointer)
            var worst = (name: "", share: 0.0)
            for entry in layout.entries {
                let got = Array(UnsafeBufferPointer(start: gradients.pointer + entry.offset, count: entry.count))
                let result = assertClose(got, golden.values("grad.\(entry.name)"), tolerance: 1e-4, "grad \(entry.name)")
                if result.shareOfTolerance > worst.share { worst = (entry.name, result.shareOfTolerance) }
            }
            print(String(format: "[masked golden] %d tensors; worst gradient %@ at %.1f%% of tolerance (threads %d)",
                         layout.entries.count, worst.name, 100 * worst.share, threads))
        }
    }

    /// The loss, its gradient and the patch center against PyTorch (float64 reference; 1e-5 of scale),
    /// and the gradient against central differences of the Float loss.
    func testMaskedPatchLossMatchesPyTorchAndFiniteDifferences() throws {
        let golden = try loadGolden("masked.safetensors")
        let (rows, k) = (9, 24)
        let crops = [0, 0, 0, 2, 2, 2, 2, 2, 3]   // the golden's masks, in row order
        let student = golden.values("loss.student"), teacher = golden.values("loss.teacher")
        func evaluate(_ s: [Float], gradient: UnsafeMutablePointer<Float>? = nil) -> (MaskedPatchLoss, Float) {
            let loss = MaskedPatchLoss(outDim: k, studentTemperature: 0.1)
            loss.center.pointer.update(from: golden.values("loss.center_in"), count: k)
            let scratch = FloatBuffer(count: rows * k)
            let value = loss.forwardBackward(student: s, teacher: teacher, dStudent: gradient ?? scratch.pointer, rows: rows,
                                             rowCrops: crops, crops: 4, teacherTemperature: 0.05).loss
            return (loss, value)
        }
        let gradient = kept(FloatBuffer(count: rows * k))
        let (loss, value) = evaluate(student, gradient: gradient.pointer)
        assertClose([value], golden.values("loss.value"), tolerance: 1e-5, "iBOT loss")
        assertClose(gradient.array, golden.values("loss.grad"), tolerance: 1e-5, "iBOT d/d(student)")
        loss.updateCenter(teacher: teacher, rows: rows)
        assertClose(loss.center.array, golden.values("loss.center_out"), tolerance: 1e-6, "patch center")
        let h: Float = 1e-2
        for i in [0, 30, 77, 130, 215] {
            var plus = student, minus = student
            plus[i] += h; minus[i] -= h
            let numeric = (evaluate(plus).1 - evaluate(minus).1) / (2 * h)
            XCTAssertEqual(numeric, gradient[i], accuracy: 2e-3 * max(1, abs(gradient[i])), "dL/ds[\(i)]")
        }
        // The logged teacher entropy (from the softmax's log-normalizers) against −Σ q·log q in Double.
        let probe = MaskedPatchLoss(outDim: k, studentTemperature: 0.1), centerIn = golden.values("loss.center_in")
        probe.center.pointer.update(from: centerIn, count: k)
        let logged = probe.forwardBackward(student: student, teacher: teacher, dStudent: kept(FloatBuffer(count: rows * k)).pointer,
                                           rows: rows, rowCrops: crops, crops: 4, teacherTemperature: 0.05).teacherEntropy
        let entropies = (0..<rows).map { r -> Double in
            let y = (0..<k).map { Double(teacher[r * k + $0] - centerIn[$0]) / 0.05 }, m = y.max()!
            let total = y.reduce(0) { $0 + exp($1 - m) }
            return -y.reduce(0) { h, v in let q = exp(v - m) / total; return q > 0 ? h + q * log(q) : h }
        }
        XCTAssertEqual(Double(logged), entropies.reduce(0, +) / Double(rows), accuracy: 1e-5, "iBOT teacher entropy")
        // The weight scales the gradient only.
        let weighted = kept(FloatBuffer(count: rows * k))
        let again = MaskedPatchLoss(outDim: k, studentTemperature: 0.1)
        again.center.pointer.update(from: golden.values("loss.center_in"), count: k)
        XCTAssertEqual(again.forwardBackward(student: student, teacher: teacher, dStudent: weighted.pointer, rows: rows,
                                             rowCrops: crops, crops: 4, teacherTemperature: 0.05, weight: 0.5).loss, value)
        for i in 0..<(rows * k) { XCTAssertEqual(weighted[i], 0.5 * gradient[i], accuracy: 1e-7 * max(1, abs(gradient[i]))) }
        // No masked patch: no loss, no gradient, the center stays.
        let empty = MaskedPatchLoss(outDim: k)
        XCTAssertEqual(empty.forwardBackward(student: student, teacher: teacher, dStudent: gradient.pointer, rows: 0,
                                             rowCrops: [], crops: 4, teacherTemperature: 0.05).loss, 0)
        empty.updateCenter(teacher: teacher, rows: 0)
        XCTAssertEqual(empty.center.array, [Float](repeating: 0, count: k))
    }

    /// ⌊I·p⌋ crops are masked, each with ⌊np·r⌋ distinct patches for a ratio r from its own slice of
    /// the range; probability 0 masks nothing; the same generator gives the same masks.
    func testMaskingCountsAndRatios() {
        let masking = PatchMasking(probability: 0.5, minimumRatio: 0.1, maximumRatio: 0.5)
        var mask = [UInt8](repeating: 9, count: 128 * 16)
        var generator = RandomGenerator(seed: 3)
        mask.withUnsafeMutableBufferPointer { masking.sample(mask: $0.baseAddress!, images: 128, patches: 16, generator: &generator) }
        let counts = (0..<128).map { i in mask[(i * 16)..<((i + 1) * 16)].reduce(0) { $0 + Int($1) } }
        XCTAssertTrue(mask.allSatisfy { $0 <= 1 })
        // Ratios of at least 0.1 of 16 patches mask at least one: exactly 64 crops are masked.
        let masked = counts.filter { $0 > 0 }.sorted()
        XCTAssertEqual(masked.count, 64)
        // The j-th slice gives the j-th smallest count (slices do not overlap and ⌊·⌋ is monotone).
        for (j, count) in masked.enumerated() {
            let low = Int(16 * (0.1 + 0.4 * Double(j) / 64)), high = Int(16 * (0.1 + 0.4 * Double(j + 1) / 64))
            XCTAssertTrue(count >= low && count <= high, "slice \(j): \(count) patches, expected \(low)...\(high)")
        }
        var again = [UInt8](repeating: 0, count: 128 * 16)
        var same = RandomGenerator(seed: 3)
        again.withUnsafeMutableBufferPointer { masking.sample(mask: $0.baseAddress!, images: 128, patches: 16, generator: &same) }
        XCTAssertEqual(mask, again)
        var none = RandomGenerator(seed: 3)
        PatchMasking(probability: 0, minimumRatio: 0.1, maximumRatio: 0.5).sample(mask: &mask, images: 128, patches: 16, generator: &none)
        XCTAssertTrue(mask.allSatisfy { $0 == 0 })
    }

    /// A run with the masked-patch term resumes with the same losses (the patch center and the mask
    /// token are in the checkpoint), logs the term, and its teacher backbone loads without the mask token.
    func testMaskedPatchTrainingResumesExactly() throws {
        let root = temporaryFolder()
        defer { try? FileManager.default.removeItem(at: root) }
        var recipe = tinyRecipe()
        recipe.ibot_loss_weight = 0.5
        recipe.max_steps = 6
        let straight = root.appendingPathComponent("straight"), split = root.appendingPathComponent("split")
        _ = try Trainer(recipe: recipe, output: straight).run()
        var first = recipe
        first.max_steps = 3
        _ = try Trainer(recipe: first, output: split).run()
        _ = try Trainer(recipe: recipe, output: split, resume: true).run()
        let a = try records(in: straight), b = try records(in: split)
        XCTAssertEqual(a.map(\.loss), b.map(\.loss), "resumed run diverged")
        XCTAssertEqual(a.map(\.ibot), b.map(\.ibot))
        XCTAssertTrue(a.allSatisfy { $0.ibot > 0 && $0.ibot.isFinite }, "the masked-patch term is logged")
        let checkpoint = try SafeTensors.read(straight.appendingPathComponent("checkpoint.safetensors"))
        XCTAssertNotNil(checkpoint.tensor("student.mask_token"))
        XCTAssertNotNil(checkpoint.tensor("ibot_patch_loss.center"))
        XCTAssertNotEqual(checkpoint.tensor("student.mask_token")?.values.map(abs).max() ?? 0, 0, "the mask token learns")
        let backbone = try BackboneCheckpoint.load(from: straight.appendingPathComponent("checkpoint.safetensors"))
        XCTAssertEqual(backbone.layout, ParameterLayout.backbone(backbone.config))
        // A recipe without the term cannot resume this run: a clear error naming the tensor.
        var plain = recipe
        plain.ibot_loss_weight = 0
        XCTAssertThrowsError(try Trainer(recipe: plain, output: straight, resume: true)) { error in
            XCTAssertTrue("\(error)".contains("mask_token"), "\(error)")
        }
    }
}
