import DinoData
import DinoEval
import DinoKernels
import Foundation
import TestSupport
import XCTest

final class LinearProbeTests: XCTestCase {
    /// Three Gaussian blobs around distinct centers: linearly separable, so the probe must reach ~100%.
    func testSeparableClassesAreLearned() throws {
        var g = RandomGenerator(seed: 4)
        let d = 8
        let centers: [[Float]] = (0..<3).map { c in (0..<d).map { Float(($0 + c) % 3 == 0 ? 3 : 0) } }
        func sample(_ n: Int) -> ([Float], [Int]) {
            var x: [Float] = [], y: [Int] = []
            for i in 0..<n { let c = i % 3; y.append(c); x += centers[c].map { $0 + Float(g.nextNormal()) * 0.5 } }
            return (x, y)
        }
        let (trainX, trainY) = sample(600), (testX, testY) = sample(300)
        var settings = LinearProbeSettings()
        settings.epochs = 10; settings.batchSize = 64
        let result = try LinearProbe.train(trainFeatures: trainX, trainLabels: trainY, testFeatures: testX, testLabels: testY,
                                           dimension: d, settings: settings)
        XCTAssertGreaterThan(result.testTop1, 99)
        XCTAssertThrowsError(try LinearProbe.train(trainFeatures: [1], trainLabels: [-1], testFeatures: [1], testLabels: [0], dimension: 1))
        // One training class, features that do not fit the labels, a label past any class count: refused.
        func refusal(_ trainX: [Float], _ trainY: [Int], _ testX: [Float], _ testY: [Int], dimension: Int = 1) -> String {
            do { _ = try LinearProbe.train(trainFeatures: trainX, trainLabels: trainY, testFeatures: testX, testLabels: testY, dimension: dimension) }
            catch { return "\(error)" }
            return "accepted"
        }
        XCTAssertEqual(refusal([1, 2, 3], [4, 4, 4], [1], [4]), "the linear probe needs at least 2 classes in its training labels (all 3 are 4)")
        XCTAssertTrue(refusal([1, 2], [0, 1, 1], [1], [0]).hasPrefix("the linear probe got 2 training and 1 test feature values for 3 and 1 labels"))
        XCTAssertTrue(refusal([1, 2], [0, 1], [1, 2], [0], dimension: 2).hasPrefix("the linear probe got 2 training"))
        XCTAssertTrue(refusal([1, 2], [0, 1], [1], [0], dimension: 0).hasPrefix("the linear probe got"))
        XCTAssertTrue(refusal([1, 2], [0, 5_000_000], [1], [0]).hasPrefix("the linear probe got label 5000000;"))
        // A learning rate that overflows the weights stops with a sentence, not an accuracy of NaN logits.
        var reckless = LinearProbeSettings()
        reckless.learningRate = 1e38
        let y = (0..<32).map { $0 % 2 }, x: [Float] = (0..<(32 * 64)).map { i in Float(y[i / 64]) + Float(i % 7) * 0.1 }
        XCTAssertThrowsError(try LinearProbe.train(trainFeatures: x, trainLabels: y, testFeatures: x, testLabels: y, dimension: 64,
                                                   settings: reckless)) {
            XCTAssertTrue("\($0)".hasPrefix("the linear probe's loss became") && "\($0)".hasSuffix("lower the learning rate (1e+38)"), "\($0)")
        }
    }

    /// Raw Fashion-MNIST pixels with a linear classifier: logistic regression is known to reach ~84%
    /// on the full data; 6,000 images and 15 epochs must clear 78%.
    func testRawPixelsOnFashionMNIST() throws {
        let train = try rawPixelFeatures(DatasetSubset(FashionMNIST(split: .train), indices: Array(0..<6000)))
        let test = try rawPixelFeatures(DatasetSubset(FashionMNIST(split: .test), indices: Array(0..<2000)))
        var settings = LinearProbeSettings()
        settings.epochs = 15; settings.learningRate = 0.05
        let result = try LinearProbe.train(trainFeatures: train.features, trainLabels: train.labels, testFeatures: test.features,
                                           testLabels: test.labels, dimension: 784, settings: settings)
        print("[linear probe] raw pixels, 6k train / 2k test: train \(result.trainTop1)%, test \(result.testTop1)%")
        XCTAssertGreaterThan(result.testTop1, 78)
    }
}
