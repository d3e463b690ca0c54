/// A plain-text table with right-aligned columns, for benchmark and report output.
struct TextTable {
    var header: [String]
    var rows: [[String]] = []

    init(_ header: String...) { self.header = header }
    init(_ header: [String]) { self.header = header }

    mutating func add(_ cells: String...) { rows.append(cells) }
    mutating func add(_ cells: [String]) { rows.append(cells) }

    func render() -> String {
        let widths = header.indices.map { c in
            ([header] + rows).map { $0.indices.contains(c) ? $0[c].count : 0 }.max() ?? 0
        }
        func line(_ cells: [String]) -> String {
            cells.enumerated().map { i, s in
                String(repeating: " ", count: widths[i] - s.count) + s
            }.joined(separator: "  ")
        }
        let rule = widths.map { String(repeating: "-", count: $0) }.joined(separator: "  ")
        return ([line(header), rule] + rows.map(line)).joined(separator: "\n")
    }
}

/// Formats `x` with `digits` decimals.
func fixed(_ x: Double, _ digits: Int) -> String {
    guard x.isFinite else { return "n/a" }
    var s = String(Int((abs(x) * pow10(digits)).rounded()))
    while s.count <= digits { s = "0" + s }
    if digits > 0 { s.insert(".", at: s.index(s.endIndex, offsetBy: -digits)) }
    return (x < 0 ? "-" : "") + s
}

private func pow10(_ n: Int) -> Double { (0..<n).reduce(1.0) { acc, _ in acc * 10 } }
