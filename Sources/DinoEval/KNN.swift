import DinoKernels
import Foundation

/// Accuracy of weighted k-NN for one k.
public struct KNNResult: Sendable, Codable {
    public var k: Int
    /// Top-1 and top-5 accuracy in percent.
    public var top1: Double
    public var top5: Double
    /// Top-1 accuracy per class in percent (NaN-free: classes without test images report 0 with count 0).
    public var perClass: [Double]
    public var perClassCount: [Int]
    /// Counts of (true class, predicted class): row `t`, column `p`.
    public var confusion: [[Int]]
}

/// Weighted k-NN classification on frozen features (official `eval_knn.py`, `knn_classifier`):
/// features L2-normalized, cosine similarity, the k nearest training images vote for their label with
/// weight exp(sim/T), T = 0.07; top-1 and top-5 from the class scores.
///
/// Similarities come from GEMM over chunks of test rows, so the whole Fashion-MNIST test set against
/// its training set takes seconds. Works for any number of test images and classes; k larger than
/// the training set uses every training image. Ties (equal similarity, equal score) go to the lower
/// index, so results are deterministic.
public enum KNN {
    public static func l2NormalizedRows(_ x: [Float], dimension d: Int) -> [Float] {
        var out = x
        let rows = x.count / max(d, 1)
        out.withUnsafeMutableBufferPointer { p in
            let p = p
            Parallel.forEachRange(rows, grain: 256) { range in
                for r in range {
                    let row = p.baseAddress! + r * d
                    let n = max(dot(row, row, d).squareRoot(), 1e-12)
                    for i in 0..<d { row[i] /= n }
                }
            }
        }
        return out
    }

    public static func evaluate(trainFeatures: [Float], trainLabels: [Int], testFeatures: [Float], testLabels: [Int],
                                dimension d: Int, ks: [Int] = [10, 20, 100, 200], temperature: Float = 0.07,
                                classCount: Int? = nil) throws -> [KNNResult] {
        let n = trainLabels.count, m = testLabels.count
        guard n > 0, m > 0 else { throw DinoError("k-NN needs at least one training and one test image (got \(n) and \(m))") }
        guard trainFeatures.count == n * d, testFeatures.count == m * d else {
            throw DinoError("k-NN: feature sizes do not match labels (train \(trainFeatures.count)/\(n), test \(testFeatures.count)/\(m), dim \(d))")
        }
        guard trainLabels.allSatisfy({ $0 >= 0 }), testLabels.allSatisfy({ $0 >= 0 }) else {
            throw DinoError("k-NN needs labelled data: use image folders with one subfolder per class, or fashion-mnist")
        }
        guard !ks.isEmpty, ks.allSatisfy({ $0 > 0 }) else { throw DinoError("k values must be positive") }
        let classes = classCount ?? ((trainLabels + testLabels).max()! + 1)
        let train = l2NormalizedRows(trainFeatures, dimension: d), test = l2NormalizedRows(testFeatures, dimension: d)
        let maxK = min(ks.max()!, n)
        // Per test row: the indices and similarities of its maxK nearest neighbours, best first.
        var neighbours = [Int32](repeating: 0, count: m * maxK)
        var similarities = [Float](repeating: 0, count: m * maxK)
        let chunk = 256
        let block = FloatBuffer(count: chunk * n)
        train.withUnsafeBufferPointer { trainPointer in
            test.withUnsafeBufferPointer { testPointer in
                for start in stride(from: 0, to: m, by: chunk) {
                    let rows = min(chunk, m - start)
                    GEMM.multiply(transposeA: false, transposeB: true, m: rows, n: n, k: d,
                                  a: testPointer.baseAddress! + start * d, lda: d, b: trainPointer.baseAddress!, ldb: d,
                                  beta: 0, c: block.pointer, ldc: n)
                    neighbours.withUnsafeMutableBufferPointer { nb in
                        similarities.withUnsafeMutableBufferPointer { sb in
                            let nb = nb, sb = sb
                            Parallel.forEachRange(rows) { range in
                                for r in range {
                                    topK(block.pointer + r * n, n, maxK, nb.baseAddress! + (start + r) * maxK,
                                         sb.baseAddress! + (start + r) * maxK)
                                }
                            }
                        }
                    }
                }
            }
        }
        return ks.map { kRequested in
            let k = min(kRequested, n)
            var top1 = 0, top5 = 0
            var confusion = [[Int]](repeating: [Int](repeating: 0, count: classes), count: classes)
            var scores = [Double](repeating: 0, count: classes)
            for r in 0..<m {
                for c in 0..<classes { scores[c] = 0 }
                for j in 0..<k {
                    let label = trainLabels[Int(neighbours[r * maxK + j])]
                    scores[label] += Double(expf(similarities[r * maxK + j] / temperature))
                }
                let ranked = (0..<classes).sorted { scores[$0] != scores[$1] ? scores[$0] > scores[$1] : $0 < $1 }
                let truth = testLabels[r]
                confusion[truth][ranked[0]] += 1
                if ranked[0] == truth { top1 += 1 }
                if ranked.prefix(min(5, k)).contains(truth) { top5 += 1 }
            }
            // Per class: the confusion matrix's diagonal over its row sums.
            let total = confusion.map { $0.reduce(0, +) }
            return KNNResult(k: kRequested, top1: 100 * Double(top1) / Double(m), top5: 100 * Double(top5) / Double(m),
                             perClass: (0..<classes).map { total[$0] == 0 ? 0 : 100 * Double(confusion[$0][$0]) / Double(total[$0]) },
                             perClassCount: total, confusion: confusion)
        }
    }

    /// The k largest of x[0..<n] (ties to the lower index), written best first.
    static func topK(_ x: UnsafePointer<Float>, _ n: Int, _ k: Int, _ indices: UnsafeMutablePointer<Int32>,
                     _ values: UnsafeMutablePointer<Float>) {
        // A min-heap of (value, index) where "smaller" means worse: lower value, or equal value and higher index.
        var heapValues = [Float](), heapIndices = [Int32]()
        heapValues.reserveCapacity(k); heapIndices.reserveCapacity(k)
        func worse(_ a: Int, _ b: Int) -> Bool {
            heapValues[a] != heapValues[b] ? heapValues[a] < heapValues[b] : heapIndices[a] > heapIndices[b]
        }
        func siftDown(_ start: Int) {
            var i = start
            while true {
                let l = 2 * i + 1, r = l + 1
                var smallest = i
                if l < heapValues.count && worse(l, smallest) { smallest = l }
                if r < heapValues.count && worse(r, smallest) { smallest = r }
                if smallest == i { return }
                heapValues.swapAt(i, smallest); heapIndices.swapAt(i, smallest); i = smallest
            }
        }
        for i in 0..<n {
            let v = x[i]
            if heapValues.count < k {
                heapValues.append(v); heapIndices.append(Int32(i))
                var c = heapValues.count - 1
                while c > 0 {
                    let p = (c - 1) / 2
                    if worse(c, p) { heapValues.swapAt(c, p); heapIndices.swapAt(c, p); c = p } else { break }
                }
            } else if v > heapValues[0] {
                heapValues[0] = v; heapIndices[0] = Int32(i); siftDown(0)
            }
        }
        let order = (0..<heapValues.count).sorted {
            heapValues[$0] != heapValues[$1] ? heapValues[$0] > heapValues[$1] : heapIndices[$0] < heapIndices[$1]
        }
        for (j, o) in order.enumerated() { indices[j] = heapIndices[o]; values[j] = heapValues[o] }
    }
}
