import DinoData
import DinoEval
import DinoKernels
import Foundation

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

/// The `--mask` files, each decoded to gray and kept at the size its image was kept at (`loadImages`), so
/// that masks for camera photos take what their photos take. A mask of another shape than its image is
/// refused: masks pair with images by order, and a stretched mask would measure the wrong patches.
func loadMasks(_ paths: [String], for inputs: [(String, DinoData.Image)], images: [String]) throws -> [DinoData.Image?] {
    try ImageCodec.decodeAll(paths.map { URL(fileURLWithPath: $0) }, channels: 1) { index, mask in
        let image = inputs[index].1
        // Aspect ratios compared within 2% (the image may have been reduced, rounding its sides).
        let ratio = (Double(mask.width) / Double(mask.height)) / (Double(image.width) / Double(image.height))
        guard abs(log(ratio)) <= 0.02 else {
            throw DinoError(String(format: "--mask %@ is %dx%d px (width/height %.2f), not the shape of its image %@ (%.2f): masks pair with --image files in order; give each image's mask, of its shape",
                                   paths[index], mask.width, mask.height, Double(mask.width) / Double(mask.height), images[index],
                                   Double(image.width) / Double(image.height)))
        }
        return AttentionExporter.resizedMask(mask, width: image.width, height: image.height)
    }
}
