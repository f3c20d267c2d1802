import DinoData
import DinoEval
import DinoKernels
import DinoModel
import Foundation
import XCTest

/// `dino attention` and `dino pca` run as a user runs them: the pictures written (sizes, names, what they
/// show), and for bad images and options a one-line error, a non-zero exit and no output file.
final class PictureCommandTests: XCTestCase {
    // MARK: attention

    func testAttentionOnAPhotoWithoutAMask() throws {
        let folder = makeTemporaryFolder()
        let out = folder.appendingPathComponent("maps")
        let jpeg = Inputs.file("photo.jpg", try ImageCodec.encodeJPEG(ImageCodec.decode(contentsOf: Inputs.photo, channels: 3)))
        let result = runDino(["attention", "--checkpoint", Inputs.rgbBackbone.path, "--image", Inputs.photo.path, jpeg.path,
                              "--output", out.path])
        assertSucceeded(result)
        XCTAssertTrue(result.stdout.contains("photo.png: 12x10 patches"), result.stdout)
        XCTAssertTrue(result.stdout.contains("wrote 35 PNGs"), result.stdout)
        let written = files(in: out)
        XCTAssertEqual(written.count, 35, "2 + 3 x (4 heads + mean) per image and the overview, names kept apart: \(written)")
        // The sheet: input + mean + 4 heads across, heat / overlay / mask down, each cell 48x40 x 6 = 288x240.
        let sheet = try ImageCodec.decode(contentsOf: out.appendingPathComponent("photo-sheet.png"), channels: 3)
        XCTAssertEqual(sheet.width, 2 + 6 * (288 + 2))
        XCTAssertGreaterThan(sheet.height, 3 * 240)
        let overview = try ImageCodec.decode(contentsOf: out.appendingPathComponent("attention-overview.png"), channels: 3)
        XCTAssertEqual(overview.width, 2 + 8 * (288 + 2), "input, mean heat, overlay, mask, then 4 heads")
        for name in ["photo-image.png", "photo-attn-mean.png", "photo-attn-head3.png", "photo-overlay-mean.png", "photo-mask60-head0.png",
                     "photo_jpg-image.png"] {
            XCTAssertTrue(written.contains(name), "\(name) missing from \(written)")
            let image = try ImageCodec.decode(contentsOf: out.appendingPathComponent(name), channels: 3)
            XCTAssertEqual([image.width, image.height], [48, 40], name)
        }
        // With a mask per image, and a gray model on the RGB photo; summary-only writes nothing.
        let mask = Inputs.file("mask.png", try ImageCodec.encodePNG(Image(width: 48, height: 40, channels: 1, pixels: (0..<(48 * 40)).map { i in
            (12..<28).contains(i / 48) && (16..<32).contains(i % 48) ? 255 : 0 })))
        let masked = runDino(["attention", "--checkpoint", Inputs.grayBackbone.path, "--image", Inputs.photo.path, "--mask", mask.path,
                              "--output", folder.appendingPathComponent("masked").path, "--size", "24"])
        assertSucceeded(masked)
        XCTAssertTrue(masked.stdout.contains("photo.png: 7x6 patches"), masked.stdout)
        let summary = folder.appendingPathComponent("summary")
        assertSucceeded(runDino(["attention", "--checkpoint", Inputs.rgbBackbone.path, "--image", Inputs.photo.path,
                                 "--output", summary.path, "--summary-only"]))
        XCTAssertEqual(files(in: summary), [])
        // --png-limit: the shares of every image, the pictures of the first.
        let limited = folder.appendingPathComponent("limited")
        let first = runDino(["attention", "--checkpoint", Inputs.rgbBackbone.path, "--image", Inputs.photo.path, jpeg.path,
                             "--output", limited.path, "--png-limit", "1"])
        assertSucceeded(first)
        XCTAssertTrue(first.stdout.contains("photo.jpg: 12x10 patches") && first.stdout.contains("over 2 image(s)"), first.stdout)
        XCTAssertTrue(first.stdout.contains("wrote 17 PNGs to \(limited.path) (the first image; --png-limit raises it)"), first.stdout)
        XCTAssertEqual(files(in: limited).count, 17)
        XCTAssertFalse(files(in: limited).contains { $0.hasPrefix("photo_jpg") }, "\(files(in: limited))")
        assertRefused(runDino(["attention", "--checkpoint", Inputs.rgbBackbone.path, "--image", Inputs.photo.path,
                               "--output", limited.path, "--png-limit", "-1"]), "--png-limit", status: 64)
    }

    /// Two images of one file name in different folders are printed and written under the folders that
    /// tell them apart (a/x.png and b/x.png: a_x-*, b_x-*), in attention and pca alike; the same file
    /// twice keeps the earlier `_png` stem for its second set.
    func testImagesOfOneNameInTwoFoldersAreKeptApart() throws {
        let folder = makeTemporaryFolder()
        let bytes = try Data(contentsOf: Inputs.photo)
        let first = Inputs.file("a/x.png", bytes), second = Inputs.file("b/x.png", bytes)
        let out = folder.appendingPathComponent("maps")
        let result = runDino(["attention", "--checkpoint", Inputs.grayBackbone.path, "--image", first.path, second.path, first.path,
                              "--output", out.path])
        assertSucceeded(result)
        let lines = result.stdout.split(separator: "\n").map(String.init)
        XCTAssertEqual(lines.prefix(3).map { $0.components(separatedBy: ":").first ?? "" }, ["a/x.png", "b/x.png", "a/x.png"], result.stdout)
        let written = files(in: out)
        for stem in ["a_x", "b_x", "a_x_png"] {
            XCTAssertEqual(written.filter { $0.hasPrefix(stem + "-") }.count, 17, "3 x (4 heads + mean) + image + sheet; " + "\(stem): \(written)")
        }
        let pca = folder.appendingPathComponent("pca")
        let components = runDino(["pca", "--checkpoint", Inputs.grayBackbone.path, "--image", first.path, second.path, "--output", pca.path])
        assertSucceeded(components)
        XCTAssertTrue(components.stdout.contains("a/x.png:") && components.stdout.contains("b/x.png:"), components.stdout)
        XCTAssertEqual(files(in: pca), ["a_x-pca-sheet.png", "a_x-pca.png", "b_x-pca-sheet.png", "b_x-pca.png", "pca-overview.png"])
    }

    /// A legal but extreme image, 16000x4 (4000 patches, under the attention's limit, so it runs at its own
    /// size): every sheet's cells stay within 1024 px on their long side (a whole-factor enlargement to 224 px
    /// on the short side would have drawn 896,000-px cells, gigabytes of canvas), while the maps at the
    /// image's own size keep every pixel.
    func testPicturesOfAStripStayBounded() throws {
        let folder = makeTemporaryFolder()
        let strip = Inputs.file("strip.png", try ImageCodec.encodePNG(Image(width: 16_000, height: 4, channels: 1,
                                                                           pixels: (0..<64_000).map { UInt8(($0 * 7) % 256) })))
        let out = folder.appendingPathComponent("maps")
        let result = runDino(["attention", "--checkpoint", Inputs.grayBackbone.path, "--image", strip.path, Inputs.photo.path,
                              "--output", out.path])
        assertSucceeded(result)
        XCTAssertTrue(result.stdout.contains("strip.png: 4000x1 patches"), result.stdout)
        let map = try ImageCodec.decode(contentsOf: out.appendingPathComponent("strip-attn-mean.png"), channels: 3)
        XCTAssertEqual([map.width, map.height], [16_000, 4])
        // input + mean + 4 heads across; the strip's cells 1024x1, the photo's 288x240 in the overview.
        let sheet = try ImageCodec.decode(contentsOf: out.appendingPathComponent("strip-sheet.png"), channels: 3)
        XCTAssertEqual(sheet.width, 2 + 6 * (1024 + 2))
        XCTAssertLessThan(sheet.height, 200)
        let overview = try ImageCodec.decode(contentsOf: out.appendingPathComponent("attention-overview.png"), channels: 3)
        XCTAssertEqual(overview.width, 2 + 8 * (1024 + 2))
        XCTAssertLessThan(overview.height, 2 * (240 + 40) + 40)
        let pca = folder.appendingPathComponent("pca")
        assertSucceeded(runDino(["pca", "--checkpoint", Inputs.grayBackbone.path, "--image", strip.path, "--output", pca.path]))
        let pcaSheet = try ImageCodec.decode(contentsOf: pca.appendingPathComponent("strip-pca-sheet.png"), channels: 3)
        XCTAssertEqual(pcaSheet.width, 2 + 4 * (1024 + 2))
        XCTAssertLessThan(pcaSheet.height, 200)
    }

    /// A camera-sized photo (more patches than the attention allows) is resized whole to the model's
    /// training size, in attention and pca alike: a 400x300 image, dark on the left and bright on the right,
    /// becomes 20x16 (5x4 patches) with both halves in it, not its top-left 20x16 pixels at full size.
    /// A photo with no dark background gets no foreground share (it would read 100% whatever the model).
    func testCameraSizedPhotosAreResizedWhole() throws {
        let folder = makeTemporaryFolder()
        let halfPixels: [UInt8] = (0..<(400 * 300 * 3)).map { (i: Int) -> UInt8 in (i / 3) % 400 < 200 ? 0 : 230 }
        let halves = Inputs.file("halves.png", try ImageCodec.encodePNG(Image(width: 400, height: 300, channels: 3, pixels: halfPixels)))
        let out = folder.appendingPathComponent("maps")
        let result = runDino(["attention", "--checkpoint", Inputs.rgbBackbone.path, "--image", halves.path, "--output", out.path])
        assertSucceeded(result)
        XCTAssertTrue(result.stdout.contains("halves.png: 5x4 patches, ") && result.stdout.contains("% of the mean attention on the foreground"),
                      result.stdout)
        XCTAssertTrue(result.stdout.contains("mean foreground share over 1 image(s)"), result.stdout)
        let seen = try ImageCodec.decode(contentsOf: out.appendingPathComponent("halves-image.png"), channels: 1)
        XCTAssertEqual([seen.width, seen.height], [20, 16])
        for row in 0..<16 {
            XCTAssertLessThan(seen.pixels[row * 20 + 1], 30, "row \(row): the left half is dark")
            XCTAssertGreaterThan(seen.pixels[row * 20 + 18], 200, "row \(row): the right half is bright")
        }
        let pca = folder.appendingPathComponent("pca")
        let components = runDino(["pca", "--checkpoint", Inputs.rgbBackbone.path, "--image", halves.path, "--output", pca.path])
        assertSucceeded(components)
        XCTAssertTrue(components.stdout.contains("halves.png: 5x4 patches"), components.stdout)
        // Every patch bright: no share is claimed, per image or overall.
        let brightPixels: [UInt8] = (0..<(40 * 32 * 3)).map { (i: Int) -> UInt8 in UInt8(120 + (i / 3) % 40) }
        let bright = Inputs.file("bright.png", try ImageCodec.encodePNG(Image(width: 40, height: 32, channels: 3, pixels: brightPixels)))
        let photos = runDino(["attention", "--checkpoint", Inputs.rgbBackbone.path, "--image", bright.path, "--output", out.path, "--summary-only"])
        assertSucceeded(photos)
        XCTAssertTrue(photos.stdout.contains("bright.png: 10x8 patches, no dark background to measure against"), photos.stdout)
        XCTAssertTrue(photos.stdout.contains("no foreground share: every patch of every image is brighter than 10%"), photos.stdout)
        XCTAssertFalse(photos.stdout.contains("100.0%"), photos.stdout)
        let mixed = runDino(["attention", "--checkpoint", Inputs.rgbBackbone.path, "--image", bright.path, Inputs.photo.path,
                             "--output", out.path, "--summary-only"])
        assertSucceeded(mixed)
        XCTAssertTrue(mixed.stdout.contains("mean foreground share over 2 image(s)") && mixed.stdout.contains("(1 of them have no dark background"),
                      mixed.stdout)
        // A phone photo stored on its side (EXIF orientation 6) is shown upright: 40x24, not 24x40.
        let sideways = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Fixtures/orientation/orientation-6.jpg")
        let upright = runDino(["attention", "--checkpoint", Inputs.grayBackbone.path, "--image", sideways.path, "--output", out.path])
        assertSucceeded(upright)
        XCTAssertTrue(upright.stdout.contains("orientation-6.jpg: 10x6 patches"), upright.stdout)
        let seenUpright = try ImageCodec.decode(contentsOf: out.appendingPathComponent("orientation-6-image.png"), channels: 1)
        XCTAssertEqual([seenUpright.width, seenUpright.height], [40, 24])
    }

    /// A quoted pattern is expanded by dino (sorted, folders left out), as the shell would have; one that
    /// matches nothing is refused naming it, and the masks are counted against the expanded images.
    func testQuotedImagePatternsAreExpanded() throws {
        let folder = makeTemporaryFolder()
        let bytes = try Data(contentsOf: Inputs.photo)
        let photos = folder.appendingPathComponent("photos")
        for name in ["b.png", "a.png", "notes.txt", "sub.png/c.png"] {
            let url = photos.appendingPathComponent(name)
            try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
            try bytes.write(to: url)
        }
        let out = folder.appendingPathComponent("maps")
        let result = runDino(["attention", "--checkpoint", Inputs.rgbBackbone.path, "--image", photos.path + "/*.png", "--output", out.path,
                              "--summary-only"])
        assertSucceeded(result)
        let names = result.stdout.split(separator: "\n").compactMap { $0.split(separator: ":").first.map(String.init) }
        XCTAssertEqual(Array(names.prefix(2)), ["a.png", "b.png"], result.stdout)
        XCTAssertTrue(result.stdout.contains("over 2 image(s)"), result.stdout)
        let pca = runDino(["pca", "--checkpoint", Inputs.rgbBackbone.path, "--image", photos.path + "/?.png", "--output", out.path])
        assertSucceeded(pca)
        XCTAssertTrue(pca.stdout.contains("a.png:") && pca.stdout.contains("b.png:"), pca.stdout)
        assertRefused(runDino(["attention", "--checkpoint", Inputs.rgbBackbone.path, "--image", photos.path + "/*.jpg", "--output", out.path]),
                      "error: --image '\(photos.path)/*.jpg' matches no file")
        assertRefused(runDino(["attention", "--checkpoint", Inputs.rgbBackbone.path, "--image", photos.path + "/*.png",
                               "--mask", Inputs.photo.path, "--output", out.path]), "give one --mask per --image (2 images, 1 masks)")
    }

    /// Masks given as a quoted pattern pair with the images by the same sort: an all-white mask puts all
    /// the attention on the foreground, an all-black one none. A mask of another shape than its image (a
    /// pairing mistake) and a folder of masks are refused.
    func testMaskPatternsPairWithTheirImages() throws {
        let folder = makeTemporaryFolder()
        let photo = try ImageCodec.decode(contentsOf: Inputs.photo, channels: 3)   // 48x40
        let tall = Image(width: 32, height: 44, channels: 3, pixels: Array(photo.pixels.prefix(32 * 44 * 3)))
        let photos = folder.appendingPathComponent("photos"), masks = folder.appendingPathComponent("masks")
        for url in [photos, masks] { try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true) }
        try ImageCodec.encodePNG(photo).write(to: photos.appendingPathComponent("a.png"))
        try ImageCodec.encodePNG(tall).write(to: photos.appendingPathComponent("b.png"))
        // Masks at another size than their images (twice and half), of the same shape.
        try ImageCodec.encodePNG(Image(width: 96, height: 80, channels: 1, pixels: .init(repeating: 255, count: 96 * 80)))
            .write(to: masks.appendingPathComponent("a.png"))
        try ImageCodec.encodePNG(Image(width: 16, height: 22, channels: 1, pixels: .init(repeating: 0, count: 16 * 22)))
            .write(to: masks.appendingPathComponent("b.png"))
        let out = folder.appendingPathComponent("maps")
        let result = runDino(["attention", "--checkpoint", Inputs.rgbBackbone.path, "--image", photos.path + "/*.png",
                              "--mask", masks.path + "/*.png", "--output", out.path, "--summary-only"])
        assertSucceeded(result)
        XCTAssertTrue(result.stdout.contains("a.png: 12x10 patches, 100.0% of the mean attention on the foreground"), result.stdout)
        XCTAssertTrue(result.stdout.contains("b.png: 8x11 patches, 0.0% of the mean attention on the foreground"), result.stdout)
        XCTAssertTrue(result.stdout.contains("mean foreground share over 2 image(s): 50.0%"), result.stdout)
        // The masks the other way round: b's 16x22 mask for the 48x40 a.png.
        let wrong = runDino(["attention", "--checkpoint", Inputs.rgbBackbone.path, "--image", photos.appendingPathComponent("a.png").path,
                             "--mask", masks.appendingPathComponent("b.png").path, "--output", out.path])
        assertRefused(wrong, "error: --mask \(masks.appendingPathComponent("b.png").path) is 16x22 px (width/height 0.73), not the shape of its image")
        XCTAssertFalse(FileManager.default.fileExists(atPath: out.path))
        assertRefused(runDino(["attention", "--checkpoint", Inputs.rgbBackbone.path, "--image", photos.path + "/*.png",
                               "--mask", masks.path, "--output", out.path]), "error: --mask \(masks.path) is a folder", status: 64)
        assertRefused(runDino(["attention", "--checkpoint", Inputs.rgbBackbone.path, "--image", photos.path + "/*.png",
                               "--mask", masks.path + "/*.jpg", "--output", out.path]), "error: --mask '\(masks.path)/*.jpg' matches no file")
    }

    func testAttentionRefusesBadImagesAndOptions() throws {
        let folder = makeTemporaryFolder()
        let out = folder.appendingPathComponent("maps")
        func attention(_ images: [String], _ extra: [String] = []) -> ProcessResult {
            runDino(["attention", "--checkpoint", Inputs.rgbBackbone.path, "--image"] + images + ["--output", out.path] + extra)
        }
        assertRefused(attention([folder.appendingPathComponent("missing.jpg").path]), "missing.jpg", "does not exist")
        // A folder: the shell's glob is the way to give its images.
        assertRefused(attention([Inputs.photo.path, folder.path]),
                      "error: --image \(folder.path) is a folder: give its images, e.g. --image \(folder.path)/*.jpg", status: 64)
        assertRefused(runDino(["pca", "--checkpoint", Inputs.rgbBackbone.path, "--image", folder.path, "--output", out.path]),
                      "--image \(folder.path) is a folder", status: 64)
        assertRefused(attention([Inputs.photo.path, Inputs.file("empty.jpg", Data()).path]), "empty.jpg", "neither a JPEG nor a PNG")
        assertRefused(attention([Inputs.truncated(Inputs.photo, as: "half.png").path]), "half.png", "truncated or corrupt")
        assertRefused(attention([Inputs.corrupted(Inputs.photo, as: "noise.png").path]), "noise.png")
        let jpeg = Inputs.file("photo-for-noise.jpg", try ImageCodec.encodeJPEG(ImageCodec.decode(contentsOf: Inputs.photo, channels: 3)))
        assertRefused(attention([Inputs.truncated(jpeg, as: "half.jpg").path]), "half.jpg", "not a readable JPEG")
        assertRefused(attention([Inputs.pngHeader(width: 100_000, height: 100_000, name: "bomb.png").path]), "bomb.png", "100000x100000")
        assertRefused(attention([Inputs.pngHeader(width: 0, height: 7, name: "zero.png").path]), "zero.png")
        assertRefused(attention([folder.path]), "is a folder")
        // Too many patches for the attention matrices at the --size given: the error names --size (without
        // --size such an image is resized to the model's training size).
        let big = Inputs.file("big.png", try ImageCodec.encodePNG(Image(width: 400, height: 300, channels: 1, pixels: .init(repeating: 9, count: 120_000))))
        assertRefused(attention([big.path], ["--size", "300"]), "big.png", "--size")
        assertSucceeded(attention([big.path], ["--size", "32", "--summary-only"]))
        // Refused before the image is enlarged (120000x100000 would be 36 GB of pixels).
        assertRefused(attention([Inputs.photo.path], ["--size", "100000"]), "photo.png", "--size")
        assertRefused(attention([Inputs.photo.path], ["--mask", Inputs.photo.path, Inputs.photo.path]), "one --mask per --image")
        assertRefused(attention([Inputs.photo.path], ["--threshold", "0"]), "--threshold", status: 64)
        assertRefused(attention([Inputs.photo.path], ["--size", "0"]), "--size", status: 64)
        assertRefused(attention([Inputs.photo.path], ["--fashion-mnist-test", "-1"]), "--fashion-mnist-test", status: 64)
        assertRefused(runDino(["attention", "--checkpoint", Inputs.rgbBackbone.path, "--output", out.path]), "give --image")
        assertRefused(runDino(["attention", "--checkpoint", Inputs.file("bad.safetensors", Data(count: 100)).path,
                               "--image", Inputs.photo.path, "--output", out.path]), "bad.safetensors")
        XCTAssertEqual(files(in: out), [], "a refused run wrote files")
    }

    // MARK: pca

    func testPCAOfPatchTokens() throws {
        let folder = makeTemporaryFolder()
        let out = folder.appendingPathComponent("pca")
        let jpeg = Inputs.file("pca-photo.jpg", try ImageCodec.encodeJPEG(ImageCodec.decode(contentsOf: Inputs.photo, channels: 3)))
        let result = runDino(["pca", "--checkpoint", Inputs.rgbBackbone.path, "--image", Inputs.photo.path, jpeg.path, "--output", out.path])
        assertSucceeded(result)
        XCTAssertTrue(result.stdout.contains("photo.png: 12x10 patches"), result.stdout)
        XCTAssertEqual(files(in: out), ["pca-overview.png", "pca-photo-pca-sheet.png", "pca-photo-pca.png", "photo-pca-sheet.png", "photo-pca.png"])
        let colours = try ImageCodec.decode(contentsOf: out.appendingPathComponent("photo-pca.png"), channels: 3)
        XCTAssertEqual([colours.width, colours.height], [48, 40])
        let sheet = try ImageCodec.decode(contentsOf: out.appendingPathComponent("photo-pca-sheet.png"), channels: 3)
        XCTAssertEqual(sheet.width, 2 + 4 * (288 + 2), "input, first component, foreground, colours; cells 6x the 48x40 image")
        // Gray model, one image, resized.
        assertSucceeded(runDino(["pca", "--checkpoint", Inputs.grayBackbone.path, "--image", Inputs.photo.path, "--size", "16",
                                 "--output", folder.appendingPathComponent("gray").path]))
        XCTAssertEqual(files(in: folder.appendingPathComponent("gray")), ["photo-pca-sheet.png", "photo-pca.png"])

        let bad = folder.appendingPathComponent("bad")
        assertRefused(runDino(["pca", "--checkpoint", Inputs.rgbBackbone.path, "--image", folder.appendingPathComponent("none.png").path,
                               "--output", bad.path]), "none.png", "does not exist")
        assertRefused(runDino(["pca", "--checkpoint", Inputs.rgbBackbone.path, "--image", Inputs.truncated(Inputs.photo, as: "pca-half.png").path,
                               "--output", bad.path]), "pca-half.png")
        assertRefused(runDino(["pca", "--checkpoint", Inputs.rgbBackbone.path, "--output", bad.path]), "give --image")
        assertRefused(runDino(["pca", "--checkpoint", Inputs.rgbBackbone.path, "--image", Inputs.photo.path, "--threshold", "1",
                               "--output", bad.path]), "--threshold", status: 64)
        assertRefused(runDino(["pca", "--checkpoint", Inputs.file("pca.safetensors", Data("{}".utf8)).path, "--image", Inputs.photo.path,
                               "--output", bad.path]), "pca.safetensors")
        assertRefused(runDino(["pca", "--checkpoint", Inputs.rgbBackbone.path, "--image",
                               Inputs.pngHeader(width: 100_000, height: 100_000, name: "pca-bomb.png").path, "--output", bad.path]), "pca-bomb.png")
        XCTAssertEqual(files(in: bad), [])
    }
}
