import ArgumentParser
import Datasets
import Foundation
import Reporting
import Training

extension SparseTrain {
    /// `sparsetrain report`: a table and figures of finished runs.
    struct Report: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Summarise run directories: markdown table (mean ± 95% interval over seeds), SVG figures, one HTML page.",
            discussion: "Runs that differ only in their seed are one row. With --paper, the paper's number for each row's setting is shown beside ours (tables: \(PaperTable.all.map(\.name).joined(separator: ", ")); Table 5 is not comparable, see ALGORITHMS.md §6.4).")

        @Argument(help: "Run directories (each with config.yaml and metrics.jsonl).") var runs: [String]
        @Option(help: "Directory for report.md, report.html and the SVG figures (default: print the table only).") var out: String?
        @Option(help: "Paper table to compare with.") var paper: String?
        @Option(help: "Title of the report.") var title = "sparsetrain report"

        func validate() throws {
            if let paper, PaperTable.named(paper) == nil {
                throw InputError("--paper must be one of \(PaperTable.all.map(\.name).joined(separator: ", ")); got '\(paper)'")
            }
        }

        func run() throws {
            let records: [RunRecord]
            do { records = try runs.map { try RunRecord(directory: $0) } } catch let e as ConfigError { throw InputError(e.description) }
            try writeReport(records, paper: paper.flatMap(PaperTable.named), title: title, out: out)
        }
    }
}

/// The markdown table of `records` (printed), and with `out` also report.md, report.html and the
/// SVG figures in that directory.
func writeReport(_ records: [RunRecord], paper: PaperTable?, title: String, out: String?) throws {
    // A run still training (or stopped) has no final accuracy yet.
    let unfinished = records.filter { !$0.isComplete }
    for r in unfinished {
        FileHandle.standardError.write(Data("report: left out \(r.directory): \(r.epochs.last!.epoch) of \(r.config.totalEpochs) epochs\n".utf8))
    }
    let groups = RunGroup.grouping(records.filter(\.isComplete))
    guard !groups.isEmpty else { throw InputError("no complete run among the \(records.count) given") }
    let claims = checkPaperClaims(groups)
    let markdown = markdownTable(groups, paper: paper) + claimsMarkdown(claims)
    guard let out else { print(markdown, terminator: ""); return }
    do { try Datasets.createDirectory(out) } catch let e as DatasetError { throw InputError(e.description) }
    let figures = reportFigures(groups)
    try writeText("# \(title)\n\n" + markdown, to: out + "/report.md")
    for (k, (_, svg)) in figures.enumerated() { try writeText(svg, to: out + "/figure-\(k + 1).svg") }
    try writeText(reportPage(title: title, groups: groups, paper: paper, figures: figures, claims: claims), to: out + "/report.html")
    print(markdown, terminator: "")
    print("wrote \(out)/report.md, report.html and \(figures.count) SVG figures")
}
