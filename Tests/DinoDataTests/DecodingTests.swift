import DinoData
import DinoKernels
import Foundation
import TestSupport
import XCTest

final class DecodingTests: XCTestCase {
    /// libjpeg-turbo and libpng against Pillow's decoding of the same files (decode.safetensors).
    func testDecodersMatchPillow() throws {
        let golden = try loadGolden("decode.safetensors")
        for (name, channels) in [("chelsea.png", 3), ("camera-gray.png", 1), ("rocket.jpg", 3), ("rocket-256.jpg", 3)] {
            let image = try ImageCodec.decode(contentsOf: fixturesFolder.appendingPathComponent(name), channels: channels)
            let expected = golden.tensor(name)!
            XCTAssertEqual([image.height, image.width] + (channels == 3 ? [3] : []), expected.shape, name)
            let worst = zip(image.pixels, expected.values).map { abs(Float($0) - $1) }.max() ?? 0
            // PNG is lossless: exact. JPEG: both use libjpeg-turbo's islow IDCT; allow 1 level for upsampling.
            XCTAssertLessThanOrEqual(worst, name.hasSuffix(".png") ? 0 : 1, "\(name): worst pixel difference \(worst)")
        }
    }

    /// Many images decoded for one command stop at a memory budget with a sentence, before the kernel's
    /// out-of-memory kill would; under it they decode as one by one.
    func testDecodingManyImagesStopsAtItsBudget() throws {
        let photo = fixturesFolder.appendingPathComponent("chelsea.png")
        let one = try ImageCodec.decode(contentsOf: photo, channels: 3)
        let all = try ImageCodec.decodeAll([photo, photo], channels: 3, byteBudget: 2 * one.pixels.count)
        XCTAssertEqual(all.map(\.pixels), [one.pixels, one.pixels])
        XCTAssertThrowsError(try ImageCodec.decodeAll([photo, photo, photo], channels: 3, byteBudget: 2 * one.pixels.count)) {
            XCTAssertTrue("\($0)".hasPrefix("the first 3 of 3 images take "), "\($0)")
            XCTAssertTrue("\($0)".hasSuffix("give fewer or smaller images at a time"), "\($0)")
        }
        // The budget counts what is kept: the same three, each shrunk as it is decoded, fit.
        var seen: [Int] = []
        let kept = try ImageCodec.decodeAll([photo, photo, photo], channels: 3, byteBudget: 2 * one.pixels.count) { index, image in
            seen.append(index)
            return Image(width: 2, height: 1, channels: 3, pixels: Array(image.pixels.prefix(6)))
        }
        XCTAssertEqual(seen, [0, 1, 2])
        XCTAssertEqual(kept.map(\.pixels), Array(repeating: Array(one.pixels.prefix(6)), count: 3))
    }

    /// Every EXIF orientation (Pillow's files, each storing what `ImageOps.exif_transpose` turns into
    /// upright.png: `make_orientation_fixtures.py`) decodes to the upright picture; the tag is read in both
    /// byte orders, and malformed segments read as "as stored".
    func testJPEGsAreTurnedUprightByTheirEXIFOrientation() throws {
        let folder = fixturesFolder.appendingPathComponent("orientation")
        let upright = try ImageCodec.decode(contentsOf: folder.appendingPathComponent("upright.png"), channels: 1)
        for n in 1...8 {
            let file = folder.appendingPathComponent("orientation-\(n).jpg")
            XCTAssertEqual(ExifOrientation.read(jpeg: try Data(contentsOf: file)), n)
            let image = try ImageCodec.decode(contentsOf: file, channels: 1)
            XCTAssertEqual([image.width, image.height], [40, 24], "orientation \(n)")
            let worst = zip(image.pixels, upright.pixels).map { abs(Int($0) - Int($1)) }.max() ?? 255
            XCTAssertLessThanOrEqual(worst, 2, "orientation \(n)")
            let reduced = try ImageCodec.decode(contentsOf: file, channels: 3, minimumShortSide: 3)
            XCTAssertEqual([reduced.width, reduced.height], [5, 3], "orientation \(n), decoded at 1/8")
        }
        // Motorola byte order, as many cameras write it: an APP1 segment put after the start marker.
        let plain = try ImageCodec.encodeJPEG(ExifOrientation.upright(upright, orientation: 8))  // turned the other way
        func withSegment(_ payload: [UInt8]) -> Data {
            let length = payload.count + 2
            return Data(plain.prefix(2)) + Data([0xFF, 0xE1, UInt8(length >> 8), UInt8(length & 0xFF)] + payload) + Data(plain.dropFirst(2))
        }
        let tiff: [UInt8] = Array("MM".utf8) + [0, 42, 0, 0, 0, 8, 0, 1, 0x01, 0x12, 0, 3, 0, 0, 0, 1, 0, 6, 0, 0, 0, 0, 0, 0]
        let motorola = withSegment(Array("Exif".utf8) + [0, 0] + tiff)
        XCTAssertEqual(ExifOrientation.read(jpeg: motorola), 6)
        let turned = try ImageCodec.decode(motorola, channels: 1)
        XCTAssertEqual([turned.width, turned.height], [40, 24])
        XCTAssertLessThanOrEqual(zip(turned.pixels, upright.pixels).map { abs(Int($0) - Int($1)) }.max() ?? 255, 2)
        // Malformed: an IFD offset past the end, a tag of the wrong type, a value out of range, a cut segment.
        var pastTheEnd = tiff; pastTheEnd[7] = 200
        var wrongType = tiff; wrongType[13] = 4
        var outOfRange = tiff; outOfRange[19] = 9
        for bad in [pastTheEnd, wrongType, outOfRange, Array(tiff.prefix(12))] {
            XCTAssertEqual(ExifOrientation.read(jpeg: withSegment(Array("Exif".utf8) + [0, 0] + bad)), 1)
        }
        XCTAssertEqual(ExifOrientation.read(jpeg: Data(motorola.prefix(10))), 1)
    }

    func testGrayAndColorConversions() throws {
        let gray = try ImageCodec.decode(contentsOf: fixturesFolder.appendingPathComponent("camera-gray.png"), channels: 3)
        XCTAssertEqual(gray.channels, 3)
        XCTAssertEqual(gray.pixels[0], gray.pixels[1]); XCTAssertEqual(gray.pixels[1], gray.pixels[2])
        let color = try ImageCodec.decode(contentsOf: fixturesFolder.appendingPathComponent("chelsea.png"), channels: 1)
        XCTAssertEqual(color.pixels.count, color.width * color.height)
    }

    func testJPEGDecodeTimeDownscaling() throws {
        let url = fixturesFolder.appendingPathComponent("rocket-256.jpg")
        let full = try ImageCodec.decode(contentsOf: url, channels: 3)
        let small = try ImageCodec.decode(contentsOf: url, channels: 3, minimumShortSide: 64)
        XCTAssertEqual(full.width, 256)
        XCTAssertLessThan(small.width, full.width)
        XCTAssertGreaterThanOrEqual(min(small.width, small.height), 64)
    }

    func testCorruptAndTruncatedFilesGiveClearErrors() throws {
        for name in ["rocket.jpg", "chelsea.png"] {
            let data = try Data(contentsOf: fixturesFolder.appendingPathComponent(name))
            for cut in [data.count / 2, 20] {
                XCTAssertThrowsError(try ImageCodec.decode(data.prefix(cut), channels: 3, name: name)) { error in
                    let text = "\(error)"
                    XCTAssertTrue(text.contains(name) && (text.contains("truncated") || text.contains("not a readable")), text)
                }
            }
        }
        XCTAssertThrowsError(try ImageCodec.decode(Data("hello".utf8), channels: 3, name: "notes.png")) { error in
            XCTAssertTrue("\(error)".contains("neither a JPEG nor a PNG"))
        }
    }

    func testPNGRoundTrip() throws {
        let pixels = (0..<(7 * 5 * 3)).map { UInt8(($0 * 37) % 256) }
        let image = Image(width: 7, height: 5, channels: 3, pixels: pixels)
        let decoded = try ImageCodec.decode(ImageCodec.encodePNG(image), channels: 3)
        XCTAssertEqual(decoded, image)
    }

    /// JPEG encoding (used to make benchmark data): a smooth image survives quality 95 within a few
    /// levels (lossy, 4:2:0 chroma for RGB), at its size and channel count.
    func testJPEGRoundTrip() throws {
        for channels in [1, 3] {
            let (width, height) = (40, 24)
            var pixels = [UInt8](repeating: 0, count: width * height * channels)
            for y in 0..<height { for x in 0..<width { for c in 0..<channels {
                pixels[(y * width + x) * channels + c] = UInt8(40 + 2 * x + 2 * y + 20 * c)
            } } }
            let image = Image(width: width, height: height, channels: channels, pixels: pixels)
            let decoded = try ImageCodec.decode(try ImageCodec.encodeJPEG(image, quality: 95), channels: channels)
            XCTAssertEqual([decoded.width, decoded.height, decoded.channels], [width, height, channels])
            let worst = zip(decoded.pixels, pixels).map { abs(Int($0) - Int($1)) }.max() ?? 0
            XCTAssertLessThanOrEqual(worst, 6, "\(channels)-channel JPEG round trip")
        }
    }

    func testImageFolderOrderClassesAndErrors() throws {
        let root = temporaryFolder()
        defer { try? FileManager.default.removeItem(at: root) }
        XCTAssertThrowsError(try ImageFolder(path: root.path)) { XCTAssertTrue("\($0)".contains("no JPEG or PNG images")) }
        XCTAssertThrowsError(try ImageFolder(path: root.appendingPathComponent("missing").path)) {
            XCTAssertTrue("\($0)".contains("does not exist"))
        }
        for (folder, file) in [("cats", "b.png"), ("cats", "a.png"), ("dogs", "z.jpg")] {
            try FileManager.default.createDirectory(at: root.appendingPathComponent(folder), withIntermediateDirectories: true)
            try FileManager.default.copyItem(at: fixturesFolder.appendingPathComponent(file.hasSuffix("png") ? "chelsea.png" : "rocket.jpg"),
                                             to: root.appendingPathComponent("\(folder)/\(file)"))
        }
        let dataset = try ImageFolder(path: root.path)
        XCTAssertEqual(dataset.relativePaths, ["cats/a.png", "cats/b.png", "dogs/z.jpg"])
        XCTAssertEqual(dataset.classNames, ["cats", "dogs"])
        XCTAssertEqual(dataset.labels, [0, 0, 1])
    }

    func testFashionMNISTReader() throws {
        let test = try FashionMNIST(split: .test)
        XCTAssertEqual(test.count, 10_000)
        var perClass = [Int](repeating: 0, count: 10)
        for i in 0..<test.count { perClass[test.label(at: i)] += 1 }
        XCTAssertEqual(perClass, Array(repeating: 1000, count: 10))
        let image = try test.image(at: 0, channels: 1, minimumShortSide: nil)
        XCTAssertEqual(image.width, 28)
        XCTAssertGreaterThan(image.pixels.max()!, 200)  // not all background
        XCTAssertThrowsError(try FashionMNIST(split: .test, folder: "/nonexistent")) {
            XCTAssertTrue("\($0)".contains("apt-get install dataset-fashion-mnist"))
        }
    }

    func testResampling() {
        // A crop already at the output size is copied exactly; a constant image stays constant.
        let values = (0..<(3 * 10 * 8)).map { Float($0 % 17) / 16 }
        let image = FloatImage(width: 10, height: 8, channels: 3, values: values)
        let same = Resample.resizedCrop(image, x: 2, y: 1, width: 5, height: 4, outputWidth: 5, outputHeight: 4)
        XCTAssertEqual(same.values[0], values[1 * 10 + 2])
        let constant = FloatImage(width: 9, height: 9, channels: 1, values: Array(repeating: 0.25, count: 81))
        for size in [3, 4, 20] {
            let out = Resample.resizedCrop(constant, x: 0, y: 0, width: 9, height: 9, outputWidth: size, outputHeight: size)
            XCTAssertTrue(out.values.allSatisfy { abs($0 - 0.25) < 1e-6 }, "size \(size)")
        }
        // Downscaling by 2 with antialiasing averages a 1-pixel checkerboard to ~0.5.
        let checker = FloatImage(width: 16, height: 16, channels: 1, values: (0..<256).map { Float(($0 / 16 + $0 % 16) % 2) })
        let half = Resample.resizedCrop(checker, x: 0, y: 0, width: 16, height: 16, outputWidth: 8, outputHeight: 8)
        XCTAssertTrue(half.values[9...54].allSatisfy { abs($0 - 0.5) < 0.05 }, "\(half.values)")
    }

    /// A CMYK JPEG (`make_cmyk_fixture.py`) decodes to Pillow's RGB, exactly.
    func testCMYKJPEGDecodesAsPillowDoes() throws {
        let decoded = try ImageCodec.decode(contentsOf: fixturesFolder.appendingPathComponent("rocket-cmyk.jpg"), channels: 3)
        let pillow = try ImageCodec.decode(contentsOf: fixturesFolder.appendingPathComponent("rocket-cmyk-pillow.png"), channels: 3)
        XCTAssertEqual([decoded.width, decoded.height], [pillow.width, pillow.height])
        XCTAssertEqual(zip(decoded.pixels, pillow.pixels).map { abs(Int($0) - Int($1)) }.max(), 0)
        XCTAssertEqual(try ImageCodec.decode(contentsOf: fixturesFolder.appendingPathComponent("rocket-cmyk.jpg"), channels: 1).channels, 1)
    }
}
