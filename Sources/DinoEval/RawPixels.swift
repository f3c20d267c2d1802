import DinoData
import DinoKernels
import Foundation

/// Raw pixels as features (pixels/255, optionally normalized by mean/std): the floor a learned
/// representation must beat (Fashion-MNIST weighted 20-NN: 84.59% raw, 85.69% normalized).
public func rawPixelFeatures(_ dataset: any ImageDataset, channels: Int = 1, size: Int? = nil,
                             mean: [Float]? = nil, std: [Float]? = nil) throws -> FeatureSet {
    var features: [Float] = []
    var dimension = 0
    for i in 0..<dataset.count {
        var image = FloatImage(try dataset.image(at: i, channels: channels, minimumShortSide: nil))
        if let size { image = Resample.resizeAndCenterCrop(image, size: size) }
        var values = image.values
        if let mean, let std { normalize(&values, channels: channels, plane: image.width * image.height, mean: mean, std: std) }
        if dimension == 0 { dimension = values.count }
        guard values.count == dimension else { throw DinoError("raw-pixel features need images of one size; give --size") }
        features += values
    }
    return FeatureSet(features: features, dimension: dimension, patchTokens: nil, names: (0..<dataset.count).map(dataset.name(at:)),
                      labels: dataset.labels, classNames: dataset.classNames, skipped: [])
}

/// The mean and standard deviation of every pixel value of `set` (one pair for all channels), for
/// normalizing raw pixels of data without published statistics.
public func pixelStatistics(_ set: FeatureSet) -> (mean: Float, std: Float) {
    guard !set.features.isEmpty else { return (0, 1) }
    var sum = 0.0, squares = 0.0
    for v in set.features { sum += Double(v); squares += Double(v) * Double(v) }
    let n = Double(set.features.count), mean = sum / n
    let std = (max(squares / n - mean * mean, 0)).squareRoot()
    return (Float(mean), std > 0 ? Float(std) : 1)
}

/// `set`'s features as (x - mean) / std (the arithmetic of `normalize`, so Fashion-MNIST's raw pixels
/// normalized here or in `rawPixelFeatures` are the same numbers).
public func normalizedPixels(_ set: FeatureSet, mean: Float, std: Float) -> FeatureSet {
    var out = set
    normalize(&out.features, channels: 1, plane: out.features.count, mean: [mean], std: [std])
    return out
}
