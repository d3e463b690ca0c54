import Foundation
import Yams

/// An experiment grid (`launch/experiments/*.yaml`): settings every run shares, axes whose
/// combinations are the runs, and the keys a budget factor scales.
///
///     title: "Table 1: …"
///     paper: table1            # the paper table `report --paper` compares with
///     budget: 1                # fraction of the paper's schedule; `grid --budget` overrides
///     scale: [epochs]          # keys multiplied by the budget (rounded, at least 1)
///     base: {model: vgg16, epochs: 160, …}
///     axes:                    # a mapping (one product) or a list of mappings (their union)
///       density_method: [pyramidal, balanced]
///       schedule:              # points that are mappings set several keys; `name` names one
///         - {sparsity: 0.7, final_sparsity: 0.9}
///       seed: [0, 1, 2]
///
/// A run's name joins its points' labels: `balanced_0.7-0.9_seed0`. Scaling keeps the schedule's
/// fractions (milestones, `rigl_end`, `prune_end`) as they are, so a budget of 0.05 runs the
/// paper's schedule in 1/20 of its epochs (ALGORITHMS.md §10). An override of one algorithm's
/// key (`--set rigl_update_every=30`) changes only that algorithm's runs.
public struct ExperimentGrid {
    /// One run of the grid: its name (the run directory under the grid's root) and its config.
    public struct Run {
        public let name: String
        public var config: TrainConfig
    }

    /// One value of an axis: its part of a run's name and the settings it makes.
    struct Point {
        let label: String
        let settings: [(key: String, value: Any)]
    }

    public let name: String
    public let title: String
    public let paper: String?
    public let budget: Double
    let scaled: [String]
    let base: [(key: String, value: Any)]
    /// Each product is a list of axes; each axis a list of points.
    let products: [[[Point]]]

    /// Parses a grid file's text; `name` is the grid's name (its file name without `.yaml`).
    public init(yaml text: String, name: String) throws {
        func bad(_ why: String) -> ConfigError { ConfigError("grid \(name): \(why)") }
        let root: Node?
        do { root = try Yams.compose(yaml: text) } catch { throw bad("not valid YAML (\(error))".replacingOccurrences(of: "\n", with: " ")) }
        guard case .mapping(let top)? = root else { throw bad("must be a YAML mapping") }
        self.name = name
        var title = name, paper: String? = nil, budget = 1.0, scaled: [String] = []
        var base: [(key: String, value: Any)] = [], products: [[[Point]]] = []
        for (keyNode, value) in top {
            switch keyNode.string ?? "" {
            case "title": title = value.string ?? title
            case "paper": paper = value.string
            case "budget":
                guard let b = value.float, b > 0, b.isFinite else { throw bad("budget must be a positive number") }
                budget = b
            case "scale": scaled = try Self.strings(value, "scale", bad)
            case "base": base = try Self.settings(value, "base", bad)
            case "axes":
                switch value {
                case .mapping: products = [try Self.axes(value, bad)]
                case .sequence(let items): products = try items.map { try Self.axes($0, bad) }
                default: throw bad("axes must be a mapping of axes or a list of such mappings")
                }
            case let key: throw bad("unknown key '\(key)' (valid: title, paper, budget, scale, base, axes)")
            }
        }
        for key in scaled where !TrainConfig.keys.contains(key) { throw bad("scale names '\(key)', which is not a config key") }
        self.title = title
        self.paper = paper
        self.budget = budget
        self.scaled = scaled
        self.base = base
        self.products = products.isEmpty ? [[]] : products
    }

    /// The grid's runs at `budget` (default: the file's), each `override` (`key=value`) applied
    /// to every run after scaling, keeping only the runs `only` selects (`key=v1,v2`: runs whose
    /// config already has one of those values), with run directories under `root`.
    public func runs(budget: Double? = nil, overrides: [String] = [], only: [String] = [], root: String) throws -> [Run] {
        let factor = budget ?? self.budget
        guard factor > 0, factor.isFinite else { throw ConfigError("--budget must be a positive number") }
        var runs: [Run] = []
        for product in products {
            for combination in Self.combinations(product) {
                let name = combination.map(\.label).joined(separator: "_")
                var config = TrainConfig()
                for (key, value) in base + combination.flatMap(\.settings) {
                    do { try config.set(key, scaled.contains(key) ? try Self.scale(value, key, by: factor) : value) } catch let e as ConfigError {
                        throw ConfigError("grid \(self.name), run \(name): \(e.description)")
                    }
                }
                for o in overrides where Self.applies(o, to: config) { try config.apply(override: o) }
                config.output = root + "/" + (name.isEmpty ? self.name : name)
                runs.append(Run(name: name.isEmpty ? self.name : name, config: config))
            }
        }
        for o in overrides where !runs.contains(where: { Self.applies(o, to: $0.config) }) {
            throw ConfigError("grid \(name): --set \(o) belongs to an algorithm none of its runs uses")
        }
        // Seeds vary slowest: a grid stopped part way has every setting at its first seeds.
        runs = runs.enumerated().sorted { ($0.element.config.seed, $0.offset) < ($1.element.config.seed, $1.offset) }.map(\.element)
        var seen = Set<String>()
        for run in runs where !seen.insert(run.name).inserted {
            throw ConfigError("grid \(name): two runs are named \(run.name); give the points of a mapping axis a name")
        }
        for filter in only {
            guard let eq = filter.firstIndex(of: "="), eq != filter.startIndex else { throw ConfigError("--only expects key=v1,v2, got '\(filter)'") }
            let key = filter[..<eq], values = filter[filter.index(after: eq)...].split(separator: ",")
            runs = try runs.filter { run in
                try values.contains { v in
                    var c = run.config
                    try c.apply(override: "\(key)=\(v)")
                    return c == run.config
                }
            }
        }
        guard !runs.isEmpty else { throw ConfigError("grid \(name): no run matches --only \(only.joined(separator: " "))") }
        return runs
    }

    /// Whether override `key=value` applies to a run with `config`: a key of one algorithm
    /// (`rigl_update_every`) changes only the runs of that algorithm.
    static func applies(_ override: String, to config: TrainConfig) -> Bool {
        let key = String(override.prefix { $0 != "=" }).trimmingCharacters(in: .whitespaces)
        return !AlgorithmSettings.allKeys.contains(key) || AlgorithmSettings.keys(of: config.algorithm).contains(key)
    }

    /// Every choice of one point per axis, the first axis varying slowest.
    static func combinations(_ axes: [[Point]]) -> [[Point]] {
        axes.reduce([[]]) { partial, axis in partial.flatMap { prefix in axis.map { prefix + [$0] } } }
    }

    /// `value × factor`, rounded, at least 1 (an epoch or step count).
    static func scale(_ value: Any, _ key: String, by factor: Double) throws -> Int {
        let v: Double
        switch value {
        case let i as Int: v = Double(i)
        case let d as Double: v = d
        default: throw ConfigError("\(key) is scaled by the budget, so it must be a number; got '\(value)'")
        }
        return max(1, Int((v * factor).rounded()))
    }

    static func strings(_ node: Node, _ key: String, _ bad: (String) -> ConfigError) throws -> [String] {
        guard case .sequence(let items) = node else { throw bad("\(key) must be a list") }
        return try items.map { item in
            guard let s = item.string else { throw bad("\(key) must list plain names") }
            return s
        }
    }

    /// The key/value pairs of a mapping, in the file's order.
    static func settings(_ node: Node, _ key: String, _ bad: (String) -> ConfigError) throws -> [(key: String, value: Any)] {
        guard case .mapping(let mapping) = node else { throw bad("\(key) must be a mapping of config keys to values") }
        return try mapping.map { k, v in
            guard let name = k.string else { throw bad("\(key) has a key that is not a plain name") }
            do { return (name, try TrainConfig.plainValue(v, key: name)) } catch let e as ConfigError { throw bad(e.description) }
        }
    }

    /// One product of axes: `key: [values]` sets that key; a list of mappings sets their keys.
    static func axes(_ node: Node, _ bad: (String) -> ConfigError) throws -> [[Point]] {
        guard case .mapping(let mapping) = node else { throw bad("each product of axes must be a mapping") }
        return try mapping.map { k, v in
            guard let axis = k.string else { throw bad("an axis name is not a plain name") }
            guard case .sequence(let items) = v, !items.isEmpty else { throw bad("axis \(axis) must be a non-empty list") }
            return try items.map { item in
                if case .mapping = item {
                    var settings = try settings(item, "axis \(axis)", bad)
                    let label = settings.first { $0.key == "name" }.map { "\($0.value)" }
                    settings.removeAll { $0.key == "name" }
                    return Point(label: label ?? settings.map { Self.label($0.value) }.joined(separator: "-"), settings: settings)
                }
                let value: Any
                do { value = try TrainConfig.plainValue(item, key: axis) } catch let e as ConfigError { throw bad(e.description) }
                return Point(label: axis == "seed" ? "seed\(value)" : Self.label(value), settings: [(axis, value)])
            }
        }
    }

    /// A value as part of a run name: numbers without trailing zeros.
    static func label(_ value: Any) -> String {
        if let d = value as? Double { return String(format: "%g", d) }
        return "\(value)"
    }
}
