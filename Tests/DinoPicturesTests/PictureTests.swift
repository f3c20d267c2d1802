import DinoData
import DinoPictures
import Foundation
import XCTest

/// The rasteriser against committed pictures (`Tests/Fixtures/pictures`): the same inputs must give the
/// same pixels. After a deliberate change, `DINO_UPDATE_PICTURES=1 swift test -c release --filter
/// PictureTests` rewrites them; look at each before committing it.
final class PictureTests: XCTestCase {
    static let folder = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures/pictures")

    func assertPicture(_ image: Image, _ name: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let url = Self.folder.appendingPathComponent(name)
        if ProcessInfo.processInfo.environment["DINO_UPDATE_PICTURES"] == "1" {
            try ImageCodec.writePNG(image, to: url)
            return
        }
        let expected = try ImageCodec.decode(contentsOf: url, channels: 3)
        XCTAssertEqual([image.width, image.height], [expected.width, expected.height], name, file: file, line: line)
        let differing = zip(image.pixels, expected.pixels).filter { $0 != $1 }.count
        XCTAssertEqual(differing, 0, "\(name): \(differing) channel values differ from the committed picture", file: file, line: line)
    }

    func testTextAndFont() throws {
        var canvas = Canvas(width: 200, height: 40, background: .white)
        canvas.text("dino 0.5% (ok)", x: 2, y: 2, scale: 2)
        canvas.text("ABC xyz 123", x: 2, y: 24)
        try assertPicture(canvas.image, "text.png")
        XCTAssertEqual(BitmapFont.width(of: "abc", scale: 2), 34)
        // Every printable ASCII character has a glyph of the stated size.
        for code in 32...126 where !"\\`^{|}~$&@\"".contains(Character(UnicodeScalar(code)!)) {
            let glyph = BitmapFont.glyph(Character(UnicodeScalar(code)!))
            XCTAssertEqual(glyph.count, 7); XCTAssertTrue(glyph.allSatisfy { $0.count == 5 })
        }
    }

    func testLineChart() throws {
        let steps = (0...100).map(Double.init)
        let chart = LineChart(title: "loss", xLabel: "step", yLabel: "nats", series: [
            LineChart.Series("loss", steps.map { ($0, 6 * exp(-$0 / 40) + 1) }, color: seriesColors[0]),
            LineChart.Series("ln K", [(0, 6.93)], color: seriesColors[3]),
        ], width: 320, height: 200)
        try assertPicture(chart.render(), "line-chart.png")
        XCTAssertEqual(niceTicks(low: 0.13, high: 0.87), [0.2, 0.4, 0.6, 0.8])
        XCTAssertEqual(niceTicks(low: 0, high: 1000), [0, 200, 400, 600, 800, 1000])
        XCTAssertEqual(niceTicks(low: 0, high: 2, integers: true), [0, 1, 2])
        XCTAssertEqual(tickLabel(0.0005), "5e-04")
        XCTAssertEqual(tickLabel(2.5), "2.5")
    }

    func testSheetScatterAndMatrix() throws {
        let gray = Image(width: 4, height: 3, channels: 1, pixels: (0..<12).map { UInt8($0 * 20) })
        let sheet = ContactSheet(title: "sheet", rows: [[ContactSheet.Cell(gray, "a"), nil], [nil, ContactSheet.Cell(gray, "b")]],
                                 minimumShortSide: 24)
        let rendered = sheet.render()
        XCTAssertEqual(ContactSheet.scale(width: 4, height: 3, minimumShortSide: 24), 8)
        XCTAssertEqual(rendered.width, 2 + 2 * (32 + 2))
        // The long side bounds the enlargement: whole factors while they fit, a shrink past it.
        func size(_ w: Int, _ h: Int) -> [Int] {
            let s = ContactSheet.displaySize(width: w, height: h, minimumShortSide: 224, maximumLongSide: 1024)
            return [s.width, s.height]
        }
        XCTAssertEqual(size(28, 28), [224, 224])
        XCTAssertEqual(size(300, 20), [900, 60], "12x would be 3600 long: the largest factor within 1024 is 3")
        XCTAssertEqual(size(20, 3000), [7, 1024])
        XCTAssertEqual(size(16_000, 4), [1024, 1])
        XCTAssertEqual(size(1024, 1024), [1024, 1024])
        let strip = ContactSheet(title: "", rows: [[ContactSheet.Cell(gray, "a")]], minimumShortSide: 24, maximumLongSide: 16).render()
        XCTAssertEqual([strip.width, strip.height], [2 + 16 + 2, 2 + 12 + 2 * BitmapFont.lineHeight + 6 + 2], "4x3 drawn 4x, not 8x")
        try assertPicture(rendered, "sheet.png")
        let points = (0..<60).map { i in (x: cos(Double(i)), y: sin(Double(i) * 1.3), label: i % 3) }
        try assertPicture(ScatterPlot(title: "map", points: points, classNames: ["a", "b", "c"], width: 240, height: 160).render(), "scatter.png")
        try assertPicture(ConfusionMatrixPicture(title: "confusion", counts: [[5, 1], [0, 7]], classNames: ["cat", "dog"]).render(),
                          "confusion.png")
        XCTAssertEqual(ColorMap.viridis.color(0), Color(68, 1, 84))
        XCTAssertEqual(ColorMap.inferno.color(1), Color(252, 255, 164))
        XCTAssertEqual(ColorMap.viridis.color(.nan), Color(68, 1, 84))
    }
}
