/// The name among `names` that `typed` most likely meant, for an error's "did you mean" (a mistyped
/// command or recipe key): the one within one edit (two for names of five letters or more), counting a
/// swap of neighbours as one edit and ignoring case, or the only one that `typed` (three letters or
/// more) begins. Nil when none is that close: a file name gets no guess.
public func closestName(to typed: String, among names: [String]) -> String? {
    let word = Array(typed.lowercased())
    func distance(_ name: String) -> Int {
        // Optimal string alignment: Levenshtein plus adjacent transpositions; d[i][j] for word[..<i], name[..<j].
        let other = Array(name.lowercased())
        var d = [[Int]](repeating: [Int](repeating: 0, count: other.count + 1), count: word.count + 1)
        for i in 0...word.count { d[i][0] = i }
        for j in 0...other.count { d[0][j] = j }
        for i in stride(from: 1, through: word.count, by: 1) {
            for j in stride(from: 1, through: other.count, by: 1) {
                let cost = word[i - 1] == other[j - 1] ? 0 : 1
                d[i][j] = min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost)
                if i > 1, j > 1, word[i - 1] == other[j - 2], word[i - 2] == other[j - 1] {
                    d[i][j] = min(d[i][j], d[i - 2][j - 2] + 1)
                }
            }
        }
        return d[word.count][other.count]
    }
    let scored = names.map { (name: $0, distance: distance($0)) }.filter { $0.distance <= ($0.name.count >= 5 ? 2 : 1) }
    if let best = scored.min(by: { $0.distance < $1.distance }),
       scored.filter({ $0.distance == best.distance }).count == 1 { return best.name }
    let begun = names.filter { word.count >= 3 && $0.lowercased().hasPrefix(String(word)) }
    return begun.count == 1 ? begun[0] : nil
}
