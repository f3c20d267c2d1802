import DinoKernels
import Foundation

/// Settings of the linear probe (a softmax-regression classifier on frozen features).
public struct LinearProbeSettings: Sendable {
    public var epochs = 30
    public var learningRate: Float = 0.1
    public var batchSize = 256
    public var momentum: Float = 0.9
    public var weightDecay: Float = 0
    public var seed: UInt64 = 0
    public init() {}
}

/// A linear classifier on frozen features (after the official `eval_linear.py`: SGD with momentum,
/// cosine learning rate to 0, weight decay 0 by default). Features are standardized with the
/// training set's mean and standard deviation first, which stands in for the official BatchNorm-free
/// small-lr setting and makes one lr work across feature scales.
public enum LinearProbe {
    public struct Result: Sendable { public var trainTop1: Double; public var testTop1: Double }

    public static func train(trainFeatures: [Float], trainLabels: [Int], testFeatures: [Float], testLabels: [Int],
                             dimension d: Int, settings s: LinearProbeSettings = LinearProbeSettings(),
                             progress: ((Int, Float) -> Void)? = nil) throws -> Result {
        let n = trainLabels.count, m = testLabels.count
        guard n > 0, m > 0, trainLabels.allSatisfy({ $0 >= 0 }), testLabels.allSatisfy({ $0 >= 0 }) else {
            throw DinoError("the linear probe needs labelled training and test images")
        }
        guard d > 0, trainFeatures.count == n * d, testFeatures.count == m * d else {
            throw DinoError("the linear probe got \(trainFeatures.count) training and \(testFeatures.count) test feature values for \(n) and \(m) labels of dimension \(d)")
        }
        // One class trains to a meaningless 100%.
        guard Set(trainLabels).count >= 2 else {
            throw DinoError("the linear probe needs at least 2 classes in its training labels (all \(n) are \(trainLabels[0]))")
        }
        let classes = (trainLabels + testLabels).max()! + 1
        guard classes <= 1_000_000 else { throw DinoError("the linear probe got label \(classes - 1); labels are class indices 0..<classes (at most 1,000,000)") }
        var mean = [Float](repeating: 0, count: d), std = [Float](repeating: 0, count: d)
        for r in 0..<n { for j in 0..<d { mean[j] += trainFeatures[r * d + j] } }
        for j in 0..<d { mean[j] /= Float(n) }
        for r in 0..<n { for j in 0..<d { let x = trainFeatures[r * d + j] - mean[j]; std[j] += x * x } }
        for j in 0..<d { std[j] = max((std[j] / Float(n)).squareRoot(), 1e-6) }
        func standardized(_ x: [Float]) -> FloatBuffer {
            let out = FloatBuffer(count: x.count)
            for i in 0..<x.count { out[i] = (x[i] - mean[i % d]) / std[i % d] }
            return out
        }
        let train = standardized(trainFeatures), test = standardized(testFeatures)
        let weight = FloatBuffer(count: classes * d), bias = FloatBuffer(count: classes)
        let velocityW = FloatBuffer(count: classes * d), velocityB = FloatBuffer(count: classes)
        let gradW = FloatBuffer(count: classes * d), gradB = FloatBuffer(count: classes)
        let b = min(s.batchSize, n)
        let batchX = FloatBuffer(count: b * d), logits = FloatBuffer(count: b * classes)
        var generator = RandomGenerator(seed: s.seed)
        var order = Array(0..<n)
        let stepsPerEpoch = max(1, n / b), totalSteps = stepsPerEpoch * s.epochs
        var step = 0
        for epoch in 0..<s.epochs {
            generator.shuffle(&order)
            var epochLoss: Float = 0
            for batchIndex in 0..<stepsPerEpoch {
                let rows = Array(order[(batchIndex * b)..<((batchIndex + 1) * b)])
                for (i, r) in rows.enumerated() { (batchX.pointer + i * d).update(from: train.pointer + r * d, count: d) }
                Linear.forward(output: logits.pointer, input: batchX.pointer, weight: weight.pointer, bias: bias.pointer,
                               rows: b, inputSize: d, outputSize: classes)
                // Softmax cross-entropy gradient, averaged over the batch.
                for (i, r) in rows.enumerated() {
                    let row = logits.pointer + i * classes
                    let mx = maximum(row, classes)
                    var total: Float = 0
                    for c in 0..<classes { row[c] = expf(row[c] - mx); total += row[c] }
                    for c in 0..<classes { row[c] /= total }
                    epochLoss -= logf(max(row[trainLabels[r]], 1e-12))
                    row[trainLabels[r]] -= 1
                    for c in 0..<classes { row[c] /= Float(b) }
                }
                gradW.zero(); gradB.zero()
                Linear.backward(dInput: nil, dWeight: gradW.pointer, dBias: gradB.pointer, dOutput: logits.pointer,
                                input: batchX.pointer, weight: weight.pointer, rows: b, inputSize: d, outputSize: classes)
                let lr = s.learningRate * 0.5 * (1 + cosf(Float.pi * Float(step) / Float(totalSteps)))
                for i in 0..<(classes * d) {
                    velocityW[i] = s.momentum * velocityW[i] + gradW[i] + s.weightDecay * weight[i]
                    weight[i] -= lr * velocityW[i]
                }
                for c in 0..<classes { velocityB[c] = s.momentum * velocityB[c] + gradB[c]; bias[c] -= lr * velocityB[c] }
                step += 1
            }
            guard epochLoss.isFinite else {
                throw DinoError("the linear probe's loss became \(epochLoss) in epoch \(epoch + 1): lower the learning rate (\(s.learningRate))")
            }
            progress?(epoch + 1, epochLoss / Float(stepsPerEpoch * b))
        }
        func accuracy(_ x: FloatBuffer, _ labels: [Int]) -> Double {
            let count = labels.count
            let out = FloatBuffer(count: count * classes)
            Linear.forward(output: out.pointer, input: x.pointer, weight: weight.pointer, bias: bias.pointer,
                           rows: count, inputSize: d, outputSize: classes)
            var correct = 0
            for r in 0..<count {
                var best = 0
                for c in 1..<classes where out[r * classes + c] > out[r * classes + best] { best = c }
                if best == labels[r] { correct += 1 }
            }
            return 100 * Double(correct) / Double(count)
        }
        return Result(trainTop1: accuracy(train, trainLabels), testTop1: accuracy(test, testLabels))
    }
}
