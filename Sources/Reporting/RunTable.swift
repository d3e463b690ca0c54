import Foundation

/// Runs that differ only in their seed, summarised: mean and 95% interval over seeds.
public struct RunGroup {
    public let label: String
    public let runs: [RunRecord]

    public var finalAccuracy: Estimate { Estimate(runs.map(\.finalAccuracy)) }
    public var bestAccuracy: Estimate { Estimate(runs.map(\.bestAccuracy)) }
    public var density: Estimate { Estimate(runs.map(\.finalDensity)) }
    public var wallSeconds: Estimate { Estimate(runs.map(\.wallSeconds)) }
    public var megabytesAllreduced: Estimate { Estimate(runs.map(\.megabytesAllreduced)) }
    public var kilobytesBroadcast: Estimate { Estimate(runs.map(\.kilobytesBroadcast)) }

    /// Groups `runs` by `label` (seed and paths left out), in first-seen order.
    public static func grouping(_ runs: [RunRecord]) -> [RunGroup] {
        var order: [String] = []
        var members: [String: [RunRecord]] = [:]
        for r in runs {
            if members[r.label] == nil { order.append(r.label) }
            members[r.label, default: []].append(r)
        }
        return order.map { RunGroup(label: $0, runs: members[$0]!) }
    }
}

/// A mean with the half-width of its 95% confidence interval (Student's t over n − 1 degrees of
/// freedom; nil for a single value).
public struct Estimate: Equatable {
    public let mean: Double
    public let halfWidth: Double?
    public let count: Int

    public init(_ values: [Double]) {
        count = values.count
        let m = values.reduce(0, +) / Double(max(1, values.count))
        mean = m
        guard values.count > 1 else { halfWidth = nil; return }
        let variance = values.reduce(0) { $0 + ($1 - m) * ($1 - m) } / Double(values.count - 1)
        halfWidth = Self.t975(degrees: values.count - 1) * (variance / Double(values.count)).squareRoot()
    }

    /// The 0.975 quantile of Student's t.
    static func t975(degrees: Int) -> Double {
        let table: [Double] = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
                               2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
                               2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042]
        return degrees >= 1 && degrees <= table.count ? table[degrees - 1] : 1.960
    }

    /// "62.1 ± 0.4" (values scaled by `scale`, `digits` decimals).
    public func formatted(scale: Double = 1, digits: Int = 1) -> String {
        let m = String(format: "%.\(digits)f", mean * scale)
        guard let h = halfWidth, h > 0 else { return m }
        return m + " ± " + String(format: "%.\(digits)f", h * scale)
    }
}

/// The report's table as cells: a header and one row per group, with the paper's number beside
/// ours when a paper table is given and has a matching cell.
public func reportCells(_ groups: [RunGroup], paper: PaperTable? = nil) -> (header: [String], rows: [[String]]) {
    var header = ["run", "seeds", "final test acc %", "best %", "density", "epochs", "wall s", "MB allreduced", "KB broadcast", "mask changes"]
    if let paper { header.insert("paper (\(paper.name), \(paper.model)) %", at: 3) }
    let rows = groups.map { g -> [String] in
        var row = [g.label, "\(g.runs.count)", g.finalAccuracy.formatted(scale: 100), g.bestAccuracy.formatted(scale: 100),
                   g.density.formatted(digits: 4), "\(g.runs[0].epochs.count)", g.wallSeconds.formatted(digits: 0),
                   g.megabytesAllreduced.formatted(digits: 1), g.kilobytesBroadcast.formatted(digits: 1),
                   "\(g.runs[0].maskChangeCount)"]
        if let paper { row.insert(paper.value(for: g.runs[0]).map { String(format: "%.1f", $0) } ?? "—", at: 3) }
        return row
    }
    return (header, rows)
}

/// The report's table in markdown.
public func markdownTable(_ groups: [RunGroup], paper: PaperTable? = nil) -> String {
    let (header, rows) = reportCells(groups, paper: paper)
    let lines = ["| " + header.joined(separator: " | ") + " |", "|" + String(repeating: " --- |", count: header.count)]
        + rows.map { "| " + $0.joined(separator: " | ") + " |" }
    return lines.joined(separator: "\n") + "\n"
}
