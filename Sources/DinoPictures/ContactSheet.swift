import DinoData

/// Pictures laid out in a grid of equal cells, each upsampled by a whole factor to at least
/// `minimumShortSide` pixels on its short side (nearest neighbour: a patch grid stays crisp) but no
/// longer than `maximumLongSide` (a 3000x20 strip would otherwise fill a 36,000-pixel cell), with a
/// caption under it, a thin border between cells, and a title above.
public struct ContactSheet: Sendable {
    /// One cell: a picture and its caption (nil leaves the cell empty).
    public struct Cell: Sendable {
        public var image: Image
        public var caption: String
        public init(_ image: Image, _ caption: String) { self.image = image; self.caption = caption }
    }

    public var title: String
    public var rows: [[Cell?]]
    public var minimumShortSide: Int
    public var maximumLongSide: Int
    public var border = 2
    public var captionScale = 2

    public init(title: String, rows: [[Cell?]], minimumShortSide: Int = 224, maximumLongSide: Int = 1024) {
        self.title = title; self.rows = rows; self.minimumShortSide = minimumShortSide
        self.maximumLongSide = max(1, maximumLongSide)
    }

    /// The whole factor each picture is scaled by: the smallest that reaches `minimumShortSide`.
    public static func scale(width: Int, height: Int, minimumShortSide: Int) -> Int {
        let short = max(1, min(width, height))
        return max(1, (minimumShortSide + short - 1) / short)
    }

    /// The size a `width`x`height` picture is drawn at: scaled by `scale(width:height:minimumShortSide:)`,
    /// unless that makes its long side longer than `maximumLongSide`; then by the largest whole factor
    /// that keeps it within, and a picture already longer is shrunk to it (its short side to at least 1).
    public static func displaySize(width: Int, height: Int, minimumShortSide: Int, maximumLongSide: Int) -> (width: Int, height: Int) {
        let (w, h) = (max(1, width), max(1, height)), long = max(w, h)
        let up = scale(width: w, height: h, minimumShortSide: minimumShortSide)
        if long * up <= maximumLongSide { return (w * up, h * up) }
        if long <= maximumLongSide { let s = maximumLongSide / long; return (w * s, h * s) }
        let shrink = Double(maximumLongSide) / Double(long)
        return (max(1, Int((Double(w) * shrink).rounded())), max(1, Int((Double(h) * shrink).rounded())))
    }

    public func render() -> Image {
        let cells = rows.flatMap { $0 }.compactMap { $0 }
        func size(_ cell: Cell) -> (width: Int, height: Int) {
            Self.displaySize(width: cell.image.width, height: cell.image.height, minimumShortSide: minimumShortSide,
                             maximumLongSide: maximumLongSide)
        }
        let cellWidth = cells.map { size($0).width }.max() ?? 1
        let cellHeight = cells.map { size($0).height }.max() ?? 1
        let captionHeight = BitmapFont.lineHeight * captionScale + 6
        let titleHeight = title.isEmpty ? 0 : BitmapFont.lineHeight * captionScale + 12
        let columns = rows.map(\.count).max() ?? 0
        let width = border + columns * (cellWidth + border)
        let height = titleHeight + border + rows.count * (cellHeight + captionHeight + border)
        var canvas = Canvas(width: max(width, BitmapFont.width(of: title, scale: captionScale) + 12), height: height, background: .white)
        if !title.isEmpty { canvas.text(title, x: 6, y: 6, scale: captionScale) }
        canvas.fill(x: 0, y: titleHeight, width: width, height: height - titleHeight, color: .border)
        for (r, row) in rows.enumerated() {
            for (c, cell) in row.enumerated() {
                let x = border + c * (cellWidth + border), y = titleHeight + border + r * (cellHeight + captionHeight + border)
                canvas.fill(x: x, y: y, width: cellWidth, height: cellHeight + captionHeight, color: .white)
                guard let cell else { continue }
                let (w, h) = size(cell)
                canvas.draw(cell.image, x: x + (cellWidth - w) / 2, y: y + (cellHeight - h) / 2, width: w, height: h)
                var caption = cell.caption
                while BitmapFont.width(of: caption, scale: captionScale) > cellWidth - 4 && caption.count > 1 { caption.removeLast() }
                canvas.text(caption, x: x + (cellWidth - BitmapFont.width(of: caption, scale: captionScale)) / 2,
                            y: y + cellHeight + 4, scale: captionScale)
            }
        }
        return canvas.image
    }
}
