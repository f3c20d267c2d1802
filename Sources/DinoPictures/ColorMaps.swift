/// Perceptually uniform colour maps, sampled from matplotlib's at 11 points and interpolated linearly.
public enum ColorMap: String, Sendable {
    case viridis, inferno

    static let viridisTable: [(Float, Float, Float)] = [
        (68, 1, 84), (72, 36, 117), (65, 68, 135), (53, 95, 141), (42, 120, 142), (33, 145, 140), (34, 168, 132),
        (68, 191, 112), (122, 209, 81), (189, 223, 38), (253, 231, 37)]
    static let infernoTable: [(Float, Float, Float)] = [
        (0, 0, 4), (22, 11, 57), (66, 10, 104), (106, 23, 110), (147, 38, 103), (188, 55, 84), (221, 81, 58),
        (243, 120, 25), (252, 165, 10), (246, 215, 70), (252, 255, 164)]

    /// The colour of `t` in [0, 1] (clamped; NaN is 0).
    public func color(_ t: Float) -> Color {
        let table = self == .viridis ? Self.viridisTable : Self.infernoTable
        let x = min(max(t.isFinite ? t : 0, 0), 1) * 10
        let i = min(Int(x), 9), f = x - Float(i)
        let a = table[i], b = table[i + 1]
        return Color(UInt8((a.0 + (b.0 - a.0) * f).rounded()), UInt8((a.1 + (b.1 - a.1) * f).rounded()),
                     UInt8((a.2 + (b.2 - a.2) * f).rounded()))
    }
}
