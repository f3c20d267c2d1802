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

/// `--image` (or `option`) paths with quoted patterns expanded: a path that names no file but holds `*`,
/// `?` or `[` becomes the files it matches, sorted (folders left out), so that `--image 'photos/*.jpg'`
/// works where the shell passed the pattern on, or where a folder holds more photos than one command
/// line takes. Masks expand with the same sort, so `'masks/*.png'` pairs with `'photos/*.jpg'` by name.
func expandImagePatterns(_ paths: [String], option: String = "--image") throws -> [String] {
    try paths.flatMap { path -> [String] in
        guard isFolder(path) == nil, path.contains(where: { "*?[".contains($0) }) else { return [path] }
        var found = glob_t()
        defer { globfree(&found) }
        let status = glob(path, 0, nil, &found)
        guard status == 0 || status == GLOB_NOMATCH else { throw DinoError("\(option) '\(path)': the pattern could not be read (glob error \(status))") }
        let matches = (0..<Int(found.gl_pathc)).compactMap { found.gl_pathv[$0].map { String(cString: $0) } }.filter { isFolder($0) == false }
        guard !matches.isEmpty else { throw DinoError("\(option) '\(path)' matches no file; check the folder and the extension (e.g. *.jpg, *.JPG, *.png)") }
        return matches
    }
}

/// The images of `--image` files and the first `fashionMNISTTest` test images, decoded to the model's
/// channels, each checked (`checkSize`: refused before any work) and kept at the size `exporter` runs it
/// at, so that a glob over camera photos holds a few hundred kilobytes per photo, not its full pixels.
func loadImages(_ paths: [String], fashionMNISTTest: Int, for exporter: AttentionExporter) throws -> [(String, DinoData.Image)] {
    let channels = exporter.checkpoint.config.inChannels
    let names = displayNames(paths)
    var inputs = Array(zip(names, try ImageCodec.decodeAll(paths.map { URL(fileURLWithPath: $0) }, channels: channels) { index, image in
        try exporter.checkSize(image, name: names[index])
        return exporter.reduced(image)
    }))
    if fashionMNISTTest > 0 {
        let test = try FashionMNIST(split: .test)
        for i in 0..<min(fashionMNISTTest, test.count) {
            let image = try test.image(at: i, channels: channels, minimumShortSide: nil), name = "fmnist-test\(i)"
            try exporter.checkSize(image, name: name)
            inputs.append((name, exporter.reduced(image)))
        }
    }
    return inputs
}

/// A name per image path for what is printed and the files written: the file name, or where two
/// different paths share it (`a/x.png`, `b/x.png`), as many trailing folders as tell them apart.
func displayNames(_ paths: [String]) -> [String] {
    let components = paths.map { URL(fileURLWithPath: $0).standardizedFileURL.pathComponents.filter { $0 != "/" } }
    var lengths = components.map { min(1, $0.count) }
    func name(_ i: Int) -> String { components[i].isEmpty ? paths[i] : components[i].suffix(lengths[i]).joined(separator: "/") }
    var names = paths.indices.map(name)
    // Lengthen the names two different paths share, by one folder at a time, until none are shared.
    var lengthened = true
    while lengthened {
        lengthened = false
        for members in Dictionary(grouping: paths.indices, by: { names[$0] }).values
        where members.count > 1 && Set(members.map { components[$0] }).count > 1 {
            for i in members where lengths[i] < components[i].count {
                lengths[i] += 1
                names[i] = name(i)
                lengthened = true
            }
        }
    }
    return names
}
