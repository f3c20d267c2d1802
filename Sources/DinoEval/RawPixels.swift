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
