import DinoKernels
import DinoModel
import DinoTraining
import Foundation
import TestSupport
import XCTest

/// Training against the PyTorch reference (Tests/Goldens/training.safetensors, make_training_goldens.py).
final class TrainingGoldenTests: XCTestCase {
    func testSchedulesMatchTheOfficialCosineScheduler() throws {
        let golden = try loadGolden("training.safetensors")
        assertClose(Schedules.cosine(base: 0.1, final: 1e-6, epochs: 3, iterationsPerEpoch: 5, warmupEpochs: 1),
                    golden.values("schedule.lr"), tolerance: 1e-7, "lr schedule")
        assertClose(Schedules.cosine(base: 0.04, final: 0.4, epochs: 3, iterationsPerEpoch: 5),
                    golden.values("schedule.wd"), tolerance: 1e-7, "wd schedule")
        assertClose(Schedules.cosine(base: 0.996, final: 1, epochs: 3, iterationsPerEpoch: 5),
                    golden.values("schedule.momentum"), tolerance: 1e-7, "momentum schedule")
        assertClose(Schedules.teacherTemperature(warmup: 0.04, final: 0.07, warmupEpochs: 2, epochs: 5),
                    golden.values("schedule.teacher_temp"), tolerance: 1e-7, "teacher temperature")
        // The warm-up's last value equals the base, which the cosine then repeats (the official quirk).
        let lr = Schedules.cosine(base: 0.1, final: 1e-6, epochs: 3, iterationsPerEpoch: 5, warmupEpochs: 1)
        XCTAssertEqual(lr[4], 0.1, accuracy: 1e-15); XCTAssertEqual(lr[5], 0.1, accuracy: 1e-15)
    }

    func testLossGradientAndCenterMatchPyTorch() throws {
        let golden = try loadGolden("training.safetensors")
        let loss = DINOLoss(outDim: 16)
        loss.center.pointer.update(from: golden.values("loss.center_in"), count: 16)
        let student = kept(FloatBuffer(golden.values("loss.student"))), teacher = kept(FloatBuffer(golden.values("loss.teacher")))
        let gradient = kept(FloatBuffer(count: student.count))
        let stats = loss.forwardBackward(student: student.pointer, teacher: teacher.pointer, dStudent: gradient.pointer,
                                         views: 4, batch: 3, teacherTemperature: 0.05)
        loss.updateCenter(teacher: teacher.pointer, rows: 6)
        assertClose([stats.loss], golden.values("loss.value"), tolerance: 1e-5, "loss")
        assertClose(gradient.array, golden.values("loss.grad"), tolerance: 1e-5, "d loss / d student")
        assertClose(loss.center.array, golden.values("loss.center_out"), tolerance: 1e-6, "center after update")
        XCTAssertGreaterThan(stats.kullbackLeibler, 0)
        XCTAssertLessThanOrEqual(stats.teacherEntropy, log(16) + 1e-4)
        // The logged statistics against Double: the teacher's mean entropy −Σ q·log q, and KL = loss − H
        // (each teacher view is the target of V − 1 of the 2(V − 1) terms).
        let t = golden.values("loss.teacher"), c = golden.values("loss.center_in")
        let entropies = (0..<6).map { row -> Double in
            let y = (0..<16).map { Double(t[row * 16 + $0] - c[$0]) / 0.05 }, m = y.max()!
            let total = y.reduce(0) { $0 + exp($1 - m) }
            return -y.reduce(0) { h, v in let q = exp(v - m) / total; return q > 0 ? h + q * log(q) : h }
        }
        let meanEntropy = entropies.reduce(0, +) / 6
        XCTAssertEqual(Double(stats.teacherEntropy), meanEntropy, accuracy: 1e-5, "teacher entropy")
        XCTAssertEqual(Double(stats.kullbackLeibler), Double(stats.loss) - meanEntropy, accuracy: 1e-5, "KL")
        // Every gradient entry (the per-row cross-entropy kernel's) against central differences of the
        // loss itself. Step 3e-3 on logits divided by T = 0.1: truncation ~h²·|third derivative|/6 ≈ 2e-4,
        // rounding of the Float loss ~2.4e-7/(2h) ≈ 4e-5, both under the 1e-3 tolerance (gradients ~0.1).
        let h: Float = 3e-3, s = golden.values("loss.student")
        func lossAt(_ values: [Float]) -> Float {
            let probe = DINOLoss(outDim: 16)
            probe.center.pointer.update(from: golden.values("loss.center_in"), count: 16)
            let scratch = FloatBuffer(count: values.count)
            return probe.forwardBackward(student: values, teacher: teacher.pointer, dStudent: scratch.pointer,
                                         views: 4, batch: 3, teacherTemperature: 0.05).loss
        }
        var worst = 0.0
        for i in 0..<s.count {
            var plus = s, minus = s
            plus[i] += h; minus[i] -= h
            let numeric = Double(lossAt(plus) - lossAt(minus)) / Double(2 * h)
            XCTAssertEqual(numeric, Double(gradient[i]), accuracy: 1e-3, "dL/ds[\(i)] by central differences")
            worst = max(worst, abs(numeric - Double(gradient[i])) / 1e-3)
        }
        print(String(format: "[DINO loss] %d gradient entries against central differences: worst at %.1f%% of tolerance",
                     s.count, 100 * worst))
    }

    /// Sinkhorn-Knopp targets (DINOv2's option): the targets, loss and gradient equal the reference's,
    /// each target row is a distribution, and the prototypes' totals are nearly equal (R/K each).
    func testSinkhornKnoppTargetsLossAndGradientMatchPyTorch() throws {
        let golden = try loadGolden("training.safetensors")
        let (b, views, k) = (3, 4, 16)
        let teacher = kept(FloatBuffer(golden.values("sinkhorn.teacher")))
        var scratch = [Double](repeating: 0, count: (2 * b + 1) * k)
        let targets = kept(FloatBuffer(count: 2 * b * k))
        SinkhornKnopp.normalize(output: targets.pointer, input: teacher.pointer, temperature: 0.05, rows: 2 * b, columns: k,
                                scratch: &scratch)
        assertClose(targets.array, golden.values("sinkhorn.targets"), tolerance: 1e-6, "Sinkhorn-Knopp targets")
        let q = targets.array
        for row in 0..<2 * b {
            XCTAssertEqual(q[(row * k)..<((row + 1) * k)].reduce(0, +), 1, accuracy: 1e-5, "row \(row) sums to 1")
        }
        // Three iterations only start the equipartition; iterated on, every prototype's total converges
        // to R/K = 0.375 while each row stays a distribution.
        SinkhornKnopp.normalize(output: targets.pointer, input: teacher.pointer, temperature: 0.05, rows: 2 * b, columns: k,
                                iterations: 500, scratch: &scratch)
        let converged = targets.array
        for j in 0..<k {
            let column = (0..<2 * b).map { converged[$0 * k + j] }.reduce(0, +)
            XCTAssertEqual(column, Float(2 * b) / Float(k), accuracy: 1e-3, "prototype \(j) total")
        }

        let loss = DINOLoss(outDim: k, teacherTargets: .sinkhornKnopp)
        let student = kept(FloatBuffer(golden.values("loss.student")))
        let gradient = kept(FloatBuffer(count: student.count))
        let stats = loss.forwardBackward(student: student.pointer, teacher: teacher.pointer, dStudent: gradient.pointer,
                                         views: views, batch: b, teacherTemperature: 0.05)
        assertClose([stats.loss], golden.values("sinkhorn.value"), tolerance: 1e-5, "loss")
        assertClose(gradient.array, golden.values("sinkhorn.grad"), tolerance: 1e-5, "d loss / d student")
        // A huge logit range cannot overflow: the largest logit is subtracted first.
        let wide = kept(FloatBuffer(teacher.array.map { $0 * 1000 }))
        SinkhornKnopp.normalize(output: targets.pointer, input: wide.pointer, temperature: 0.05, rows: 2 * b, columns: k,
                                scratch: &scratch)
        XCTAssertTrue(targets.array.allSatisfy { $0.isFinite && $0 >= 0 })
    }

    /// KoLeo (DINOv2's regularizer): value and gradient equal the reference's, the gradient agrees with
    /// central differences of the loss, and the weight scales the accumulated gradient.
    func testKoLeoMatchesPyTorchAndFiniteDifferences() throws {
        let golden = try loadGolden("training.safetensors")
        let (n, d) = (7, 5)
        let x = golden.values("koleo.input")
        var gradient = [Float](repeating: 0, count: n * d)
        let value = KoLeo.forwardBackward(dInput: &gradient, input: x, rows: n, columns: d)
        assertClose([value], golden.values("koleo.value"), tolerance: 1e-6, "KoLeo value")
        assertClose(gradient, golden.values("koleo.grad"), tolerance: 1e-5, "KoLeo gradient")
        let h: Float = 1e-3
        for i in [0, 9, 17, 34] {
            var plus = x, minus = x
            plus[i] += h; minus[i] -= h
            let numeric = (KoLeo.forwardBackward(dInput: nil, input: plus, rows: n, columns: d)
                - KoLeo.forwardBackward(dInput: nil, input: minus, rows: n, columns: d)) / (2 * h)
            XCTAssertEqual(numeric, gradient[i], accuracy: 2e-3 * max(1, abs(gradient[i])), "dL/dx[\(i)]")
        }
        var weighted = [Float](repeating: 1, count: n * d)
        _ = KoLeo.forwardBackward(dInput: &weighted, input: x, rows: n, columns: d, weight: 0.1)
        for i in 0..<n * d { XCTAssertEqual(weighted[i], 1 + 0.1 * gradient[i], accuracy: 1e-6) }
        XCTAssertEqual(KoLeo.forwardBackward(dInput: nil, input: x, rows: 1, columns: d), 0)
    }

    /// The loss and gradient are the plain formula's bits: each similarity summed over c in order from
    /// zero, the nearest neighbour the first of the largest, on a recipe-sized batch (64 × 96), odd sizes,
    /// and rows repeated so that ties must go to the first.
    func testKoLeoGivesThePlainLoopsBits() {
        func plain(_ x: [Float], _ n: Int, _ d: Int) -> (Float, [Float]) {
            let epsilon = 1e-8
            var unit = [Double](repeating: 0, count: n * d), norms = [Double](repeating: 0, count: n)
            var dUnit = [Double](repeating: 0, count: n * d), total = 0.0
            for i in 0..<n {
                var s = 0.0
                for c in 0..<d { s += Double(x[i * d + c]) * Double(x[i * d + c]) }
                norms[i] = max(s.squareRoot(), epsilon)
                for c in 0..<d { unit[i * d + c] = Double(x[i * d + c]) / norms[i] }
            }
            for i in 0..<n {
                var nearest = -1, best = -Double.infinity
                for j in 0..<n where j != i {
                    var similarity = 0.0
                    for c in 0..<d { similarity += unit[i * d + c] * unit[j * d + c] }
                    if similarity > best { best = similarity; nearest = j }
                }
                let difference = (0..<d).map { unit[i * d + $0] - unit[nearest * d + $0] + epsilon }
                let distance = difference.reduce(0.0) { $0 + $1 * $1 }.squareRoot()
                total -= log(distance + epsilon)
                guard distance > 0 else { continue }
                let scale = -1 / (Double(n) * distance * (distance + epsilon))
                for c in 0..<d { dUnit[i * d + c] += scale * difference[c]; dUnit[nearest * d + c] -= scale * difference[c] }
            }
            var gradient = [Float](repeating: 0, count: n * d)
            for i in 0..<n where norms[i] > epsilon {
                var projection = 0.0
                for c in 0..<d { projection += unit[i * d + c] * dUnit[i * d + c] }
                for c in 0..<d { gradient[i * d + c] += Float((dUnit[i * d + c] - unit[i * d + c] * projection) / norms[i]) }
            }
            return (Float(total / Double(n)), gradient)
        }
        var generator = RandomGenerator(seed: 31)
        let workspace = KoLeo.Workspace()
        for (n, d, repeats) in [(64, 96, false), (7, 5, false), (13, 33, true), (2, 1, false)] {
            var x = (0..<n * d).map { _ in generator.nextFloat() * 2 - 1 }
            if repeats { for c in 0..<d { x[5 * d + c] = x[1 * d + c]; x[9 * d + c] = x[1 * d + c] } }  // 1, 5, 9 tie
            let (value, gradient) = plain(x, n, d)
            var got = [Float](repeating: 0, count: n * d)
            let loss = KoLeo.forwardBackward(dInput: &got, input: x, rows: n, columns: d, workspace: workspace)
            XCTAssertEqual(loss.bitPattern, value.bitPattern, "loss, n \(n) d \(d)")
            let differing = zip(got, gradient).filter { $0.bitPattern != $1.bitPattern }.count
            XCTAssertEqual(differing, 0, "gradient elements not bit-equal, n \(n) d \(d)")
        }
    }

    /// What made the official KoLeo go to inf or NaN on small batches of a small folder: two images with
    /// the same features (a duplicated image, or a collapsed student), and all-zero features. The loss
    /// stays finite (ε inside the log: −log(ε√d + ε) at worst) and so does the gradient.
    func testKoLeoStaysFiniteOnDuplicatesAndZeros() {
        let d = 4
        for rows in [[Float]([0.3, -0.2, 0.5, 0.1, 0.3, -0.2, 0.5, 0.1]),          // two identical rows
                     [Float](repeating: 0, count: 2 * d),                           // two zero rows
                     [Float]([1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0])] {              // a duplicate and a zero row
            let n = rows.count / d
            var gradient = [Float](repeating: 0, count: rows.count)
            let value = KoLeo.forwardBackward(dInput: &gradient, input: rows, rows: n, columns: d)
            XCTAssertTrue(value.isFinite && value <= -log(Float(1e-8)) + 1, "KoLeo \(value) on \(rows)")
            XCTAssertTrue(gradient.allSatisfy(\.isFinite), "gradient \(gradient) on \(rows)")
        }
    }

    /// Six official steps: lr warm-up, cosine wd and momentum, teacher-temperature warm-up by epoch,
    /// the last layer frozen in epoch 0, per-tensor clipping at 0.05, parameter groups, EMA.
    /// Tolerance 1e-4 on the loss and center (the target); the float32 run drifts from the
    /// float64 reference only through rounding, amplified by AdamW's normalization of tiny gradients.
    func testSixStepTrajectoryMatchesPyTorch() throws {
        let golden = try loadGolden("training.safetensors")
        let vit = GoldenModel.vit, head = GoldenModel.head(normLastLayer: true)
        let model = SelfDistillation(config: vit, head: head, batchSize: 2, globalSize: 16, localSize: 8, localCount: 2)
        try loadTensors(golden, prefix: "init.", into: model.student.pointer, layout: model.layout, path: "training.safetensors")
        model.teacher.copy(from: model.student)
        let lr = Schedules.cosine(base: 0.128 * 2 / 256, final: 1e-5, epochs: 3, iterationsPerEpoch: 2, warmupEpochs: 1)
        let wd = Schedules.cosine(base: 0.04, final: 0.4, epochs: 3, iterationsPerEpoch: 2)
        let momentum = Schedules.cosine(base: 0.9, final: 1, epochs: 3, iterationsPerEpoch: 2)
        let temperature = Schedules.teacherTemperature(warmup: 0.04, final: 0.07, warmupEpochs: 2, epochs: 3)
        let lastLayer = model.layout.entry("head.last_layer.weight_v")!
        let initialLastLayer = Array(UnsafeBufferPointer(start: model.student.pointer + lastLayer.offset, count: lastLayer.count))
        var losses: [Float] = [], centers: [Float] = []
        var generator = RandomGenerator(seed: 0)
        for step in 0..<6 {
            let epoch = step / 2
            let globals = kept(FloatBuffer(golden.values("step\(step).globals"))), locals = kept(FloatBuffer(golden.values("step\(step).locals")))
            let stats = try model.step(globals: globals.pointer, locals: locals.pointer,
                                       settings: StepSettings(learningRate: lr[step], weightDecay: wd[step], teacherMomentum: momentum[step],
                                                              teacherTemperature: temperature[epoch], freezeLastLayer: epoch < 1,
                                                              clip: 0.05, dropPathRate: 0),
                                       dropPath: &generator)
            losses.append(stats.loss)
            centers += model.loss.center.array
            if step == 1 {
                // Frozen: the last layer did not move and AdamW kept no state for it.
                let now = Array(UnsafeBufferPointer(start: model.student.pointer + lastLayer.offset, count: lastLayer.count))
                XCTAssertEqual(now, initialLastLayer, "the last layer moved while frozen")
                let index = model.layout.entries.firstIndex { $0.name == lastLayer.name }!
                XCTAssertEqual(model.optimizer.steps[index], 0)
                XCTAssertEqual(model.optimizer.steps[0], 2)
            }
        }
        let lossCheck = assertClose(losses, golden.values("trajectory.loss"), tolerance: 1e-4, "trajectory losses")
        let centerCheck = assertClose(centers, golden.values("trajectory.center"), tolerance: 1e-4, "trajectory centers")
        var teacherWorst = 0.0
        for e in model.layout.entries {
            let mine = Array(UnsafeBufferPointer(start: model.teacher.pointer + e.offset, count: e.count))
            teacherWorst = max(teacherWorst, assertClose(mine, golden.values("final_teacher.\(e.name)"), tolerance: 1e-3,
                                                         "final teacher \(e.name)").shareOfTolerance)
        }
        let expectedSum = golden.values("final_teacher.head.last_layer.weight_v").reduce(0, +)
        let mineSum = UnsafeBufferPointer(start: model.teacher.pointer + lastLayer.offset, count: lastLayer.count).reduce(0, +)
        XCTAssertEqual(mineSum, expectedSum, accuracy: 1e-3 * abs(expectedSum) + 1e-4, "teacher checksum")
        print(String(format: "[trajectory] losses %.1f%%, centers %.1f%% of tolerance; worst teacher tensor %.1f%% of 1e-3",
                     100 * lossCheck.shareOfTolerance, 100 * centerCheck.shareOfTolerance, 100 * teacherWorst))
    }
}

final class OptimizerTests: XCTestCase {
    func testAdamWStepInClosedFormWithParameterGroups() {
        var layout = ParameterLayout()
        layout.append("blocks.0.mlp.fc1.weight", [2, 2])   // decayed
        layout.append("blocks.0.mlp.fc1.bias", [2])        // bias: not decayed
        layout.append("cls_token", [1, 1, 2])              // ndim 3: decayed (official rule)
        layout.append("norm.weight", [2])                  // 1-D: not decayed
        XCTAssertEqual(layout.entries.map(\.decays), [true, false, true, false])
        let optimizer = AdamW(layout: layout)
        let p = kept(FloatBuffer([1, -2, 3, 0.5, 1, 2, 1, 1, 1, 2])), g = kept(FloatBuffer([0.1, -0.2, 0.3, 0.4, 0.5, -0.5, 0.2, -0.1, 0.05, -0.3]))
        let lr: Float = 0.01, wd: Float = 0.1
        let before = p.array, grads = g.array
        optimizer.step(parameters: p.pointer, gradients: g.pointer, learningRate: lr, weightDecay: wd, clip: 0, freezeLastLayer: false)
        XCTAssertEqual(layout.count, 10)
        for i in 0..<10 {
            let decays = layout.entries.first { $0.range.contains(i) }!.decays
            let decayed = decays ? before[i] * (1 - lr * wd) : before[i]
            // After one step m̂ = g and v̂ = g², so the update is lr·g/(|g| + eps).
            let expected = decayed - lr * grads[i] / (abs(grads[i]) + 1e-8)
            XCTAssertEqual(p[i], expected, accuracy: 1e-6, "element \(i)")
        }
    }

    func testPerTensorClipping() {
        var layout = ParameterLayout()
        layout.append("a.weight", [2, 2]); layout.append("b.weight", [2, 2])
        let optimizer = AdamW(layout: layout)
        let p = kept(FloatBuffer(count: 8)), g = kept(FloatBuffer([3, 4, 0, 0, 0.03, 0.04, 0, 0]))  // norms 5 and 0.05
        let norms = optimizer.step(parameters: p.pointer, gradients: g.pointer, learningRate: 0, weightDecay: 0, clip: 1,
                                   freezeLastLayer: false)
        XCTAssertEqual(norms[0], 5, accuracy: 1e-6); XCTAssertEqual(norms[1], 0.05, accuracy: 1e-8)
        XCTAssertEqual(g[0], 3 / (5 + 1e-6), accuracy: 1e-6)   // clipped: coef = clip/(‖g‖ + 1e-6)
        XCTAssertEqual(g[1], 4 / (5 + 1e-6), accuracy: 1e-6)
        XCTAssertEqual(g[4], 0.03); XCTAssertEqual(g[5], 0.04)   // under the limit: untouched
    }

    func testFrozenLastLayerIsSkippedNotZeroed() {
        var layout = ParameterLayout()
        layout.append("head.mlp.0.weight", [1, 2])
        layout.append("head.last_layer.weight_v", [1, 2])
        let optimizer = AdamW(layout: layout)
        let p = kept(FloatBuffer([1, 1, 1, 1])), g = kept(FloatBuffer([0.5, 0.5, 0.5, 0.5]))
        optimizer.step(parameters: p.pointer, gradients: g.pointer, learningRate: 0.1, weightDecay: 0.5, clip: 0, freezeLastLayer: true)
        XCTAssertEqual(Array(p.array[2...]), [1, 1], "weight decay must not touch a frozen last layer")
        XCTAssertEqual(optimizer.steps, [1, 0])
        XCTAssertEqual(Array(optimizer.firstMoment.array[2...]), [0, 0])
        XCTAssertLessThan(p[0], 1)
    }

    /// The EMA taken inside the AdamW pass gives the bits of a step followed by `updateTeacher`, on
    /// updated, clipped, frozen (skipped) and non-trainable tensors alike.
    func testTeacherEMAInTheOptimizerPassEqualsTheSeparatePass() {
        var layout = ParameterLayout()
        layout.append("blocks.0.mlp.fc1.weight", [40, 300])
        layout.append("blocks.0.mlp.fc1.bias", [40])
        layout.append("head.last_layer.weight_g", [1, 40], trainable: false)
        layout.append("head.last_layer.weight_v", [40, 500])
        var generator = RandomGenerator(seed: 7)
        let values = { (scale: Float) in (0..<layout.count).map { _ in scale * (generator.nextFloat() - 0.5) } }
        let student = values(2), teacher = values(2), gradients = values(0.1)
        for frozen in [false, true] {
            let fused = AdamW(layout: layout), separate = AdamW(layout: layout)
            let p1 = kept(FloatBuffer(student)), t1 = kept(FloatBuffer(teacher)), g1 = kept(FloatBuffer(gradients))
            let p2 = kept(FloatBuffer(student)), t2 = kept(FloatBuffer(teacher)), g2 = kept(FloatBuffer(gradients))
            for _ in 0..<3 {
                fused.step(parameters: p1.pointer, gradients: g1.pointer, learningRate: 0.01, weightDecay: 0.04, clip: 0.5,
                           freezeLastLayer: frozen, teacher: t1.pointer, teacherMomentum: 0.99)
                separate.step(parameters: p2.pointer, gradients: g2.pointer, learningRate: 0.01, weightDecay: 0.04, clip: 0.5,
                              freezeLastLayer: frozen)
                updateTeacher(teacher: t2.pointer, student: p2.pointer, count: layout.count, momentum: 0.99)
            }
            XCTAssertEqual(p1.array, p2.array, "frozen \(frozen)")
            XCTAssertEqual(t1.array, t2.array, "frozen \(frozen)")
            XCTAssertEqual(g1.array, g2.array, "frozen \(frozen)")
            XCTAssertNotEqual(t1.array, teacher)
        }
    }

    func testTeacherEMA() {
        let t = kept(FloatBuffer([1, 2])), s = kept(FloatBuffer([3, 4]))
        updateTeacher(teacher: t.pointer, student: s.pointer, count: 2, momentum: 0.9)
        XCTAssertEqual(t[0], 1.2, accuracy: 1e-6); XCTAssertEqual(t[1], 2.2, accuracy: 1e-6)
    }
}

final class CollapseMonitorTests: XCTestCase {
    func testUniformAndOneHotCollapseAreReportedOnceAndHealthyTrainingIsNot() {
        let lnK = Float(log(4096.0))
        var uniform = CollapseMonitor(outDim: 4096)
        var warnings: [String] = []
        for step in 1...200 {
            if let w = uniform.observe(LossStatistics(loss: lnK - 0.001, teacherEntropy: lnK - 0.002, kullbackLeibler: 0.001),
                                       step: step, minimumSteps: 100) { warnings.append(w) }
        }
        XCTAssertEqual(warnings.count, 1)
        XCTAssertTrue(warnings[0].contains("stuck at ln(out_dim) = 8.3178"), warnings[0])
        var oneHot = CollapseMonitor(outDim: 4096)
        let w = (1...60).compactMap { oneHot.observe(LossStatistics(loss: 0.01, teacherEntropy: 0.001, kullbackLeibler: 0.005), step: $0, minimumSteps: 50) }
        XCTAssertEqual(w.count, 1)
        XCTAssertTrue(w[0].contains("one prototype"))
        // Early steps never warn, and a teacher near ln K with a student that still has much to learn is not collapse.
        var healthy = CollapseMonitor(outDim: 4096)
        XCTAssertTrue((1...300).compactMap {
            healthy.observe(LossStatistics(loss: lnK + 0.3, teacherEntropy: lnK - 0.05, kullbackLeibler: 0.35), step: $0, minimumSteps: 50)
        }.isEmpty)
    }
}
