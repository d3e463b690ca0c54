import ArgumentParser
import Foundation
import Reporting
import Theory

extension SparseTrain {
    /// `sparsetrain theory …`: the paper's theorems as calculators and experiments.
    struct TheoryCommand: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "theory",
            abstract: "The paper's theory (§2): width bounds, Fig. 2, the constructive proof, subset sums.",
            subcommands: [Width.self, LowerBound.self, Figure2.self, Construct.self, SubsetSum.self])
    }
}

/// Parses "a,b,c" into integers.
private func intList(_ text: String, _ flag: String) throws -> [Int] {
    let parts = text.split(separator: ",").map { Int($0.trimmingCharacters(in: .whitespaces)) }
    guard !parts.isEmpty, parts.allSatisfy({ ($0 ?? 0) > 0 }) else {
        throw InputError("\(flag) must be a comma-separated list of positive integers, got '\(text)'")
    }
    return parts.map { $0! }
}

/// Parses "a,b,c" into numbers in (0, 1].
private func unitList(_ text: String, _ flag: String) throws -> [Double] {
    let parts = text.split(separator: ",").map { Double($0.trimmingCharacters(in: .whitespaces)) }
    guard !parts.isEmpty, parts.allSatisfy({ ($0 ?? .nan) > 0 && ($0 ?? .nan) <= 1 }) else {
        throw InputError("\(flag) must be a comma-separated list of numbers in (0, 1], got '\(text)'")
    }
    return parts.map { $0! }
}

private func checkUnit(_ v: Double, _ flag: String) throws {
    guard v.isFinite, v > 0, v < 1 else { throw InputError("\(flag) \(v) is outside (0, 1)") }
}

/// Target architecture and source densities shared by `width` and `construct`.
struct TargetOptions: ParsableArguments {
    @Option(help: "Target network d,n1,…,nL (input size, then layer widths).")
    var target: String

    @Option(help: "One sparsity for every source layer, in [0, 1).")
    var sparsity: Double?

    @Option(help: "Per-layer source densities p1,…,pL (instead of --sparsity).")
    var densities: String?

    @Option(help: "Allowed failure probability δ in (0, 1).")
    var delta: Double = 0.01

    func resolve() throws -> (target: [Int], densities: [Double]) {
        let t = try intList(target, "--target")
        guard t.count >= 2 else { throw InputError("--target needs the input size and at least one layer") }
        try checkUnit(delta, "--delta")
        let p: [Double]
        if let densities {
            p = try unitList(densities, "--densities")
            guard p.count == t.count - 1 else {
                throw InputError("--densities needs \(t.count - 1) values (one per target layer), got \(p.count)")
            }
        } else if let s = sparsity {
            guard s.isFinite, s >= 0, s < 1 else { throw InputError("--sparsity \(s) is outside [0, 1)") }
            p = Array(repeating: 1 - s, count: t.count - 1)
        } else {
            throw InputError("give --sparsity or --densities")
        }
        return (t, p)
    }
}

extension SparseTrain.TheoryCommand {
    struct Width: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Source widths an ER network needs to contain a target (Thm 2.2 / A.4; A.5 with --kernels).")

        @OptionGroup var targetOptions: TargetOptions

        @Option(help: "Kernel elements per layer k1,…,kL for convolutional targets (widths are channels).")
        var kernels: String?

        @Flag(help: "Print one JSON object.")
        var json = false

        struct Report: Codable {
            var target: [Int]
            var densities: [Double]
            var delta: Double
            var factors: [Int]
            var source_widths: [Int]
            var target_weights: [Int]
        }

        func run() throws {
            let (t, p) = try targetOptions.resolve()
            let k = try kernels.map { try intList($0, "--kernels") }
            let r: WidthRequirement
            do { r = try widthRequirement(target: t, densities: p, delta: targetOptions.delta, kernelSizes: k) } catch let e as TheoryError {
                throw InputError(e.description)
            }
            if json {
                print(try jsonLine(Report(target: t, densities: p, delta: targetOptions.delta, factors: r.factors,
                                          source_widths: r.sourceWidths, target_weights: r.targetWeights)))
                return
            }
            var table = TextTable("layer", "target width", "density", "q_l", "source width")
            for l in 0..<t.count {
                table.add(l == 0 ? "0 (input copies)" : "\(l)", "\(t[l])", l == 0 ? "-" : fixed(p[l - 1], 4),
                          "\(r.factors[l])", "\(r.sourceWidths[l])")
            }
            print("ER source for target \(t.map(String.init).joined(separator: ",")) with δ = \(targetOptions.delta):")
            print(table.render())
        }
    }

    struct LowerBound: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "lower-bound",
            abstract: "Width below which a 1-hidden-layer ER network fails to represent some target (Thm 2.3).")

        @Option(help: "Input dimension d of the univariate target.")
        var inputs: Int

        @Option(help: "Sparsity of the source in (0, 1).")
        var sparsity: Double

        @Option(help: "Failure probability δ in (0, 1).")
        var delta: Double = 0.01

        @Flag(help: "Print one JSON object.")
        var json = false

        func run() throws {
            guard inputs > 0 else { throw InputError("--inputs must be positive") }
            try checkUnit(sparsity, "--sparsity")
            try checkUnit(delta, "--delta")
            let w = try widthLowerBound(inputs: inputs, density: 1 - sparsity, delta: delta)
            if json {
                print(try jsonLine(["inputs": Double(inputs), "sparsity": sparsity, "delta": delta, "min_width": w]))
            } else {
                print("a 1-hidden-layer ER network at sparsity \(sparsity) narrower than \(fixed(w, 2)) neurons "
                    + "fails with probability > δ = \(delta) on some univariate target with \(inputs) inputs")
            }
        }
    }

    struct Figure2: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Fig. 2: required width of source layer 1 vs sparsity (target 128 hidden, 10 outputs, δ = 0.001).")

        @Option(help: "Write the curve as CSV (sparsity,width).")
        var csv: String?

        @Option(help: "Write the curve as an SVG line chart.")
        var svg: String?

        @Flag(help: "Print one JSON object.")
        var json = false

        func run() throws {
            let sparsities = (0..<100).map { Double($0) / 100 } + [0.995, 0.999]
            let widths = try sparsities.map { try figure2Width(sparsity: $0) }
            if let csv {
                let text = "sparsity,width\n" + zip(sparsities, widths).map { "\($0),\($1)" }.joined(separator: "\n") + "\n"
                try writeText(text, to: csv)
            }
            if let svg {
                try writeText(lineChartSVG(title: "Width of source layer 1 (target 128-10, δ = 0.001)",
                                           x: sparsities, y: widths.map(Double.init), xLabel: "sparsity", yLabel: "width (log scale)"),
                              to: svg)
            }
            if json {
                print(try jsonLine(["sparsity": sparsities, "width": widths.map(Double.init)]))
                return
            }
            var table = TextTable("sparsity", "width of layer 1", "× target width")
            for s in [0.0, 0.5, 0.8, 0.9, 0.95, 0.99, 0.995, 0.999] {
                let w = try figure2Width(sparsity: s)
                table.add(fixed(s, 3), "\(w)", fixed(Double(w) / 128, 1))
            }
            print(table.render())
        }
    }

    struct Construct: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Build the source network of the proof of Thm 2.2 and check f_S = f_T numerically.")

        @OptionGroup var targetOptions: TargetOptions

        @Option(help: "Trials per width.")
        var trials: Int = 100

        @Option(help: "Width scales to test, relative to the theorem's factors q_l.")
        var scales: String = "1,0.5,0.25"

        @Option(help: "Seed of the first trial.")
        var seed: UInt64 = 0

        @Flag(help: "Print one JSON object.")
        var json = false

        struct Row: Codable {
            var scale: Double
            var source_widths: [Int]
            var trials: Int
            var failures: Int
            var failure_rate: Double
            /// Wilson 95% interval of the failure probability.
            var failure_rate_low: Double
            var failure_rate_high: Double
            var max_error: Double
        }

        func run() throws {
            let (t, p) = try targetOptions.resolve()
            guard trials > 0 else { throw InputError("--trials must be positive") }
            let scaleList = try scales.split(separator: ",").map { s -> Double in
                guard let v = Double(s), v > 0 else { throw InputError("--scales must be positive numbers, got '\(s)'") }
                return v
            }
            let r = try widthRequirement(target: t, densities: p, delta: targetOptions.delta)
            var rows: [Row] = []
            for scale in scaleList {
                let factors = r.factors.dropLast().map { max(1, Int((Double($0) * scale).rounded())) }
                var failures = 0
                var worst = 0.0
                let experiment = try ConstructionExperiment(target: t, densities: p, factors: factors)
                let widths = experiment.sourceWidths
                for k in 0..<trials {
                    let o = experiment.run(seed: seed &+ UInt64(k))
                    if o.succeeded { worst = max(worst, o.maxError) } else { failures += 1 }
                }
                let (low, high) = wilsonInterval(failures, trials)
                rows.append(Row(scale: scale, source_widths: widths, trials: trials, failures: failures,
                                failure_rate: Double(failures) / Double(trials), failure_rate_low: low,
                                failure_rate_high: high, max_error: worst))
            }
            if json {
                print(try jsonLine(rows))
                return
            }
            print("target \(t.map(String.init).joined(separator: ",")), densities \(p.map { fixed($0, 3) }.joined(separator: ",")), δ = \(targetOptions.delta)")
            var table = TextTable("scale of q", "source widths", "trials", "failed", "failure rate", "95% interval", "max |f_S − f_T|")
            for row in rows {
                table.add(fixed(row.scale, 2), row.source_widths.map(String.init).joined(separator: ","), "\(row.trials)",
                          "\(row.failures)", fixed(row.failure_rate, 3),
                          "[\(fixed(row.failure_rate_low, 3)), \(fixed(row.failure_rate_high, 3))]",
                          String(format: "%.2e", row.max_error))
            }
            print(table.render())
            print("Thm 2.2 bounds the failure probability at scale 1 by δ = \(targetOptions.delta); "
                + "max |f_S − f_T| is over successful trials (the construction is exact up to float32 rounding).")
        }
    }

    struct SubsetSum: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "subset-sum",
            abstract: "Lemma 2.4: base size n for ε-approximation by subset sums of Bernoulli(p)-masked U(−1,1).")

        @Option(help: "Densities p to test.")
        var densities: String = "1,0.5,0.2,0.1"

        @Option(help: "Approximation tolerance ε in (0, 1).")
        var epsilon: Double = 0.01

        @Option(help: "Failure probability δ in (0, 1).")
        var delta: Double = 0.05

        @Option(help: "Trials per density.")
        var trials: Int = 400

        @Option(help: "Seed.")
        var seed: UInt64 = 0

        @Flag(help: "Print one JSON object.")
        var json = false

        func run() throws {
            let ps = try unitList(densities, "--densities")
            try checkUnit(epsilon, "--epsilon")
            try checkUnit(delta, "--delta")
            guard trials > 0 else { throw InputError("--trials must be positive") }
            let points = try ps.map {
                try subsetSumRequiredN(density: $0, epsilon: epsilon, delta: delta, trials: trials, seed: seed)
            }
            if json {
                print(try jsonLine(points))
                return
            }
            print("smallest n with P(|z − Σ_I M_i X_i| ≤ \(epsilon)) ≥ \(1 - delta) over \(trials) trials")
            var table = TextTable("p", "n", "n·log(1/(1−p))", "n·p")
            for pt in points {
                table.add(fixed(pt.density, 3), pt.n.map(String.init) ?? "> max",
                          pt.nTimesLogFactor.map { fixed($0, 1) } ?? "-", pt.nTimesDensity.map { fixed($0, 1) } ?? "-")
            }
            print(table.render())
        }
    }
}

/// Wilson score interval (95%) for `k` successes in `n` trials.
func wilsonInterval(_ k: Int, _ n: Int) -> (Double, Double) {
    let z = 1.959964, p = Double(k) / Double(n), nn = Double(n)
    let centre = (p + z * z / (2 * nn)) / (1 + z * z / nn)
    let half = z * ((p * (1 - p) / nn + z * z / (4 * nn * nn)).squareRoot()) / (1 + z * z / nn)
    return (max(0, centre - half), min(1, centre + half))
}

/// Writes text atomically (temporary file, then rename).
func writeText(_ text: String, to path: String) throws {
    do {
        try Data(text.utf8).write(to: URL(fileURLWithPath: path), options: .atomic)
    } catch {
        throw InputError("cannot write \(path): \(error.localizedDescription)")
    }
}
