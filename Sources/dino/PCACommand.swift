import ArgumentParser
import DinoData
import DinoEval
import DinoKernels
import DinoModel
import Foundation

struct PCA: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pca",
        abstract: "Show the last layer's patch features as colour: the first three principal components, fitted over the images together, with the background removed.",
        discussion: """
        For each image: NAME-pca.png (components 1-3 of the foreground patches as red, green and blue, at \
        the image's size) and NAME-pca-sheet.png (the input, the first component, the foreground and the \
        colours, upsampled to at least 224 px); pca-overview.png with several images. The foreground is \
        where the first component, scaled to [0, 1] over all images, is above --threshold (its sign \
        chosen so that the foreground touches the image borders less).
        """)

    @Option(help: ArgumentHelp(checkpointHelp)) var checkpoint: String
    @Option(parsing: .upToNextOption, help: "JPEG or PNG images (any size); a quoted pattern such as 'photos/*.jpg' is expanded.") var image: [String] = []
    @Option(name: .customLong("fashion-mnist-test"), help: "Also use the first N Fashion-MNIST test images.")
    var fashionMNISTTest = 0
    @Option(help: "Output folder.") var output: String
    @Option(help: "Resize the short side to this before cropping to a multiple of the patch size (default: the image's own size, or the model's training size for an image that would give more than 4,096 patches).") var size: Int?
    @Option(help: "Foreground threshold on the first component, in (0, 1).") var threshold: Float = 0.5
    @OptionGroup var normalization: NormalizationOption
    @OptionGroup var precision: MatmulPrecisionOption
    @OptionGroup var threads: ThreadOptions

    func validate() throws {
        try requirePath(checkpoint, "--checkpoint")
        for path in image { try requireImagePath(path) }
        try requireFolderPath(output, "--output")
        try require(threshold > 0 && threshold < 1, "--threshold must be in (0, 1)")
        try require(fashionMNISTTest >= 0, "--fashion-mnist-test must be 0 or more")
        try require((size ?? 1) >= 1, "--size must be a positive number of pixels")
    }

    func run() throws {
        try threads.apply()
        try runReportingErrors {
            let backbone = try loadBackbone(checkpoint, normalization: normalization)
            let maps = PatchComponentMaps(checkpoint: backbone, size: size, threshold: threshold)
            let inputs = try loadImages(try expandImagePatterns(image), fashionMNISTTest: fashionMNISTTest, for: maps.exporter)
            guard !inputs.isEmpty else { throw DinoError("give --image files or --fashion-mnist-test N") }
            let tokens = precision.run { inputs.map { maps.tokens($0.1, name: $0.0) } }
            let fitted = maps.maps(tokens)
            let written = try maps.export(fitted, to: URL(fileURLWithPath: output))
            if fitted.count <= 20 {
                for m in fitted {
                    print(String(format: "%@: %dx%d patches, %.0f%% foreground", m.name, m.gridWidth, m.gridHeight, 100 * m.foregroundShare))
                }
            }
            print("wrote \(written.count) PNGs to \(output)" + (fitted.count > 1 ? " (pca-overview.png: every image)" : ""))
        }
    }
}
