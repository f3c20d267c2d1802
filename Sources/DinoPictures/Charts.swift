import DinoData
import Foundation

/// Tick positions for an axis over [low, high]: about `count` round values (1, 2 or 5 × 10ⁿ apart).
public func niceTicks(low: Double, high: Double, count: Int = 5, integers: Bool = false) -> [Double] {
    guard high > low, low.isFinite, high.isFinite else { return [low] }
    let raw = max((high - low) / Double(max(1, count)), integers ? 1 : 0)
    let magnitude = pow(10, floor(log10(raw)))
    let unit = [1.0, 2, 5, 10].first { $0 * magnitude >= raw } ?? 10
    let step = unit * magnitude
    // Tick k is k·unit·10ⁿ, computed as an integer over 10⁻ⁿ when n < 0 so that 0.6 is 0.6.
    func value(_ k: Double) -> Double { magnitude < 1 ? k * unit / (1 / magnitude).rounded() : k * unit * magnitude }
    var ticks: [Double] = []
    var k = ceil(low / step)
    while value(k) <= high + step * 1e-9 { ticks.append(value(k)); k += 1 }
    return ticks
}

/// A tick label: few digits, no trailing zeros, exponent form for very large or small values.
public func tickLabel(_ value: Double) -> String {
    if value == 0 { return "0" }
    let a = abs(value)
    if a >= 1e5 || a < 1e-3 { return String(format: "%.0e", value) }
    var text = String(format: a >= 100 ? "%.0f" : a >= 1 ? "%.2f" : "%.4f", value)
    if text.contains(".") { while text.hasSuffix("0") { text.removeLast() }; if text.hasSuffix(".") { text.removeLast() } }
    return text
}

/// The colours of series and classes: distinct, readable on white (Tableau's 10).
public let seriesColors: [Color] = [Color(31, 119, 180), Color(255, 127, 14), Color(44, 160, 44), Color(214, 39, 40),
                                    Color(148, 103, 189), Color(140, 86, 75), Color(227, 119, 194), Color(127, 127, 127),
                                    Color(188, 189, 34), Color(23, 190, 207)]

/// A line chart: axes with round ticks, labelled, one line per series, a legend.
public struct LineChart: Sendable {
    public struct Series: Sendable {
        public var name: String
        public var points: [(x: Double, y: Double)]
        public var color: Color
        /// Drawn as a horizontal reference line (e.g. ln K) when it has one point.
        public init(_ name: String, _ points: [(x: Double, y: Double)], color: Color) {
            self.name = name; self.points = points; self.color = color
        }
    }

    public var title: String, xLabel: String, yLabel: String
    public var series: [Series]
    public var width: Int, height: Int
    /// Ticks on whole numbers only along x (epochs).
    public var integerX: Bool
    public init(title: String, xLabel: String, yLabel: String, series: [Series], width: Int = 640, height: Int = 320,
                integerX: Bool = false) {
        self.title = title; self.xLabel = xLabel; self.yLabel = yLabel; self.series = series; self.width = width; self.height = height
        self.integerX = integerX
    }

    public func render() -> Image {
        let text = 2, glyph = BitmapFont.lineHeight * text
        var canvas = Canvas(width: width, height: height, background: .white)
        canvas.text(title, x: 8, y: 6, scale: text)
        let finite = series.flatMap(\.points).filter { $0.x.isFinite && $0.y.isFinite }
        let xs = finite.map(\.x), ys = finite.map(\.y)
        var (x0, x1) = (xs.min() ?? 0, xs.max() ?? 1), (y0, y1) = (ys.min() ?? 0, ys.max() ?? 1)
        if x1 <= x0 { x1 = x0 + 1 }
        if y1 <= y0 { y0 -= 0.5 * max(1e-9, abs(y0)); y1 += 0.5 * max(1e-9, abs(y1)) }
        let pad = (y1 - y0) * 0.05
        (y0, y1) = (y0 - pad, y1 + pad)
        let yTicks = niceTicks(low: y0, high: y1), xTicks = niceTicks(low: x0, high: x1, integers: integerX)
        let labelWidth = (yTicks.map { BitmapFont.width(of: tickLabel($0), scale: text) }.max() ?? 0)
        let lastLabel = xTicks.last.map { BitmapFont.width(of: tickLabel($0), scale: text) } ?? 0
        let left = 12 + labelWidth + 8, right = width - max(12, lastLabel / 2 + 4)
        let legendRows = series.isEmpty ? 0 : 1
        let top = 12 + glyph + 6 + legendRows * (glyph + 4), bottom = height - (2 * glyph + 14)
        func px(_ x: Double) -> Int { left + Int(((x - x0) / (x1 - x0) * Double(right - left)).rounded()) }
        func py(_ y: Double) -> Int { bottom - Int(((y - y0) / (y1 - y0) * Double(bottom - top)).rounded()) }
        // Legend, one row.
        var lx = 8
        for s in series {
            canvas.fill(x: lx, y: 12 + glyph + 6 + glyph / 2 - 2, width: 18, height: 4, color: s.color)
            canvas.text(s.name, x: lx + 24, y: 12 + glyph + 6, scale: text)
            lx += 24 + BitmapFont.width(of: s.name, scale: text) + 20
        }
        // Grid, ticks and labels.
        for t in yTicks where t >= y0 && t <= y1 {
            canvas.line(left, py(t), right, py(t), color: Color(232, 232, 232))
            let label = tickLabel(t)
            canvas.text(label, x: left - 8 - BitmapFont.width(of: label, scale: text), y: py(t) - glyph / 2 + 1, scale: text)
        }
        for t in xTicks where t >= x0 && t <= x1 {
            canvas.line(px(t), bottom, px(t), bottom + 5, color: .ink)
            let label = tickLabel(t)
            canvas.text(label, x: px(t) - BitmapFont.width(of: label, scale: text) / 2, y: bottom + 8, scale: text)
        }
        canvas.line(left, top, left, bottom, color: .ink)
        canvas.line(left, bottom, right, bottom, color: .ink)
        canvas.text(xLabel, x: (left + right - BitmapFont.width(of: xLabel, scale: text)) / 2, y: height - glyph - 2, scale: text)
        canvas.text(yLabel, x: 4, y: top - BitmapFont.lineHeight, scale: 1)
        // Lines (a single point is a dashed horizontal reference).
        for s in series {
            let points = s.points.filter { $0.x.isFinite && $0.y.isFinite }
            if points.count == 1 {
                var x = left
                while x < right { canvas.line(x, py(points[0].y), min(right, x + 8), py(points[0].y), color: s.color, thickness: 2); x += 14 }
                continue
            }
            // At most one point per pixel column: the mean of the points that fall in it.
            var columns: [Int: (sum: Double, count: Int)] = [:]
            for p in points { let c = px(p.x); columns[c, default: (0, 0)].sum += p.y; columns[c, default: (0, 0)].count += 1 }
            let path = columns.keys.sorted().map { ($0, py(columns[$0]!.sum / Double(columns[$0]!.count))) }
            if path.count == 1 { canvas.fill(x: path[0].0 - 2, y: path[0].1 - 2, width: 5, height: 5, color: s.color) }
            for (a, b) in zip(path, path.dropFirst()) { canvas.line(a.0, a.1, b.0, b.1, color: s.color, thickness: 2) }
        }
        return canvas.image
    }
}

/// Points in the plane coloured by class, with a legend of class names.
public struct ScatterPlot: Sendable {
    public var title: String
    public var points: [(x: Double, y: Double, label: Int)]
    public var classNames: [String]
    public var width: Int, height: Int
    public init(title: String, points: [(x: Double, y: Double, label: Int)], classNames: [String], width: Int = 640, height: Int = 560) {
        self.title = title; self.points = points; self.classNames = classNames; self.width = width; self.height = height
    }

    public func render() -> Image {
        let text = 2, glyph = BitmapFont.lineHeight * text
        var canvas = Canvas(width: width, height: height, background: .white)
        canvas.text(title, x: 8, y: 6, scale: text)
        let legendWidth = (classNames.map { BitmapFont.width(of: $0, scale: text) }.max() ?? 0) + 34
        let (left, right, top, bottom) = (12, width - legendWidth - 12, 12 + glyph + 8, height - 12)
        let xs = points.map(\.x), ys = points.map(\.y)
        let (x0, x1) = (xs.min() ?? 0, max((xs.max() ?? 1), (xs.min() ?? 0) + 1e-9))
        let (y0, y1) = (ys.min() ?? 0, max((ys.max() ?? 1), (ys.min() ?? 0) + 1e-9))
        canvas.line(left, top, right, top, color: .border); canvas.line(left, bottom, right, bottom, color: .border)
        canvas.line(left, top, left, bottom, color: .border); canvas.line(right, top, right, bottom, color: .border)
        for p in points {
            let x = left + 4 + Int((p.x - x0) / (x1 - x0) * Double(right - left - 8))
            let y = bottom - 4 - Int((p.y - y0) / (y1 - y0) * Double(bottom - top - 8))
            canvas.fill(x: x - 1, y: y - 1, width: 3, height: 3, color: seriesColors[max(0, p.label) % seriesColors.count])
        }
        for (c, name) in classNames.enumerated() {
            let y = top + c * (glyph + 4)
            canvas.fill(x: right + 14, y: y + 3, width: 10, height: 10, color: seriesColors[c % seriesColors.count])
            canvas.text(name, x: right + 30, y: y, scale: text)
        }
        return canvas.image
    }
}

/// A confusion matrix as a grid: rows true classes, columns predicted, each cell shaded by its share
/// of the row and labelled with its count.
public struct ConfusionMatrixPicture: Sendable {
    public var title: String
    public var counts: [[Int]]
    public var classNames: [String]
    public init(title: String, counts: [[Int]], classNames: [String]) {
        self.title = title; self.counts = counts; self.classNames = classNames
    }

    public func render() -> Image {
        let text = 2, glyph = BitmapFont.lineHeight * text, n = counts.count
        let names = (0..<n).map { r in r < classNames.count ? "\(r) \(classNames[r])" : "\(r)" }
        let nameWidth = (names.map { BitmapFont.width(of: $0, scale: text) }.max() ?? 0) + 16
        let cell = max(48, BitmapFont.width(of: "\(counts.flatMap { $0 }.max() ?? 0)", scale: text) + 12)
        let top = 12 + 2 * glyph + 16
        let width = nameWidth + n * cell + 12, height = top + n * cell + glyph + 16
        var canvas = Canvas(width: max(width, BitmapFont.width(of: title, scale: text) + 16), height: height, background: .white)
        canvas.text(title, x: 8, y: 6, scale: text)
        canvas.text("rows: true class, columns: predicted (class index)", x: 8, y: 8 + glyph, scale: 1)
        for c in 0..<n {
            let label = "\(c)"
            canvas.text(label, x: nameWidth + c * cell + (cell - BitmapFont.width(of: label, scale: text)) / 2, y: top - glyph, scale: text)
        }
        for (r, row) in counts.enumerated() {
            canvas.text(names[r], x: 8, y: top + r * cell + (cell - glyph) / 2, scale: text)
            let total = max(1, row.reduce(0, +))
            for (c, count) in row.enumerated() {
                let share = Float(count) / Float(total)
                let color = ColorMap.inferno.color(0.15 + 0.85 * share)
                canvas.fill(x: nameWidth + c * cell, y: top + r * cell, width: cell - 1, height: cell - 1, color: count == 0 ? Color(245, 245, 245) : color)
                let label = "\(count)"
                let ink: Color = share > 0.55 ? .ink : .white
                if count > 0 {
                    canvas.text(label, x: nameWidth + c * cell + (cell - BitmapFont.width(of: label, scale: text)) / 2,
                                y: top + r * cell + (cell - glyph) / 2, color: ink, scale: text)
                }
            }
        }
        return canvas.image
    }
}
