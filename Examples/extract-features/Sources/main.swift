import DinoData
import DinoEval
import DinoModel
import Foundation

// extract-features CHECKPOINT FOLDER: the frozen CLS features of every image in FOLDER, and the
// last layer's attention of the first, from a program that embeds the library.
let arguments = CommandLine.arguments
guard arguments.count == 3 else {
    print("usage: extract-features CHECKPOINT FOLDER")
    exit(2)
}
do {
    let backbone = try BackboneCheckpoint.load(from: URL(fileURLWithPath: arguments[1]))
    let images = try ImageFolder(path: arguments[2])
    let features = try FeatureExtractor(checkpoint: backbone).extract(images)   // features.features: N × D floats
    print("\(features.count) images, \(features.dimension)-d features")
    let first = try images.image(at: 0, channels: backbone.config.inChannels)
    let attention = AttentionExporter(checkpoint: backbone).attention(first, name: images.name(at: 0))
    print("attention of \(attention.name): \(attention.gridWidth)x\(attention.gridHeight) patches")
} catch {
    print("error: \(error)")
    exit(1)
}
