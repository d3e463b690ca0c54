import Foundation
import NN
import Yams

/// Everything a training run needs, from a YAML file and `key=value` overrides. Unknown keys are
/// errors that list the valid ones; the resolved config is written into the run directory.
public struct TrainConfig: Equatable, Sendable {
    public var model = "resnet20"
    public var classes = 10
    /// synthetic, cifar10 (ImageFolder of JPEGs), cifar10-binary, cifar100-binary, imagefolder, packed.
    public var dataset = "synthetic"
    /// Directory holding `train/` and `test/` (or the CIFAR binary files, or packed dirs).
    public var dataPath = ""
    /// Input CxHxW; empty: the model's default (synthetic data and MLPs use it too).
    public var input = ""
    public var hidden: [Int] = [256, 256]
    /// First-stage channels of ResNet-20/32/56/110 (stages w, 2w, 4w); unset = 16.
    public var width: Int?
    public var syntheticTrain = 5120
    public var syntheticTest = 1024
    /// Keep decoded images in memory (small datasets).
    public var inMemory = true
    public var batchSize = 128
    /// Epochs of training; unset means 30 (IMP derives its length from its cycles instead).
    public var epochsSetting: Int?
    public var epochs: Int {
        get { epochsSetting ?? 30 }
        set { epochsSetting = newValue }
    }
    public var lr = 0.1
    public var momentum = 0.9
    public var nesterov = false
    public var weightDecay = 5e-4
    public var labelSmoothing = 0.0
    /// constant, multistep, cosine.
    public var schedule = "cosine"
    /// Milestones as fractions of the epochs (multistep).
    public var milestones: [Double] = [0.5, 0.75]
    public var gamma = 0.1
    /// Floor of the cosine schedule; unset means 0, or lr/10 for IMP (cosine 0.1 → 0.01).
    public var minLRSetting: Double?
    public var minLR: Double {
        get { minLRSetting ?? (algorithm == "imp" ? lr / 10 : 0) }
        set { minLRSetting = newValue }
    }
    public var warmupEpochs = 0.0
    public var sparsity = 0.9
    /// uniform, erk, er, balanced, pyramidal, er-synflow, er-snip, er-imp.
    public var densityMethod = "erk"
    /// Checkpoint whose masks give the layer ratios of er-imp.
    public var ratiosFrom = ""
    /// Training batches SNIP scores are summed over (er-snip).
    public var snipBatches = 1
    /// er-synflow and mask_from synflow: dense (leave the residual blocks' projection shortcuts
    /// out of the ranking and unpruned, the Synflow authors' convention) or prune (score them).
    public var synflowShortcuts = "dense"
    /// count, bernoulli.
    public var maskDraw = "count"
    /// none, random-addition, rejection.
    public var flow = "none"
    public var denseFirst = false
    /// Train even when the initial mask cuts off a class or empties a layer.
    public var allowDisconnected = false
    public var denseLast = false
    public var seed = 0
    /// Threads per rank (parallel loops; OpenBLAS runs single-threaded inside them).
    public var threads = 1
    /// Loader threads per rank.
    public var dataThreads = 1
    public var output = "runs/latest"
    public var checkpointEvery = 1
    /// Seconds without progress (at least; 20 median steps if longer) after which a rank ends the
    /// job: a hung peer would otherwise leave the others waiting forever. 0: off.
    public var watchdogSeconds = 300.0
    /// local (per-rank batch statistics) or sync (synchronised over ranks).
    public var bn = "local"
    /// Reduce gradient buckets on a communication thread during backward: auto (when MPI allows
    /// it and every rank has a spare core), on, off.
    public var commThread = "auto"
    /// Sparse kernels in masked linear and convolution layers: auto (per layer and pass, the faster of dense and
    /// sparse as timed once per batch size and density), on, off.
    public var sparseKernels = "auto"
    /// How dense convolution passes run (`ConvolutionAlgorithm`): automatic, gemm, direct,
    /// winograd (F(2×2, 3×3)) or winograd4 (F(4×4, 3×3)).
    public var convolution = "automatic"
    /// Progress line every this many steps.
    public var logEvery = 20
    /// How the mask changes during training: fixed, imp, rigl, str, edge-popup (see `AlgorithmSettings`).
    public var algorithm = "fixed"
    /// Keys of the chosen algorithm; nil = that key's default. A key set for another algorithm is
    /// an error.
    public var finalSparsity: Double?
    public var impPruneFraction: Double?
    public var impCycleEpochs: Int?
    public var impFinalEpochs: Int?
    public var impRewindEpoch: Int?
    public var riglUpdateEvery: Int?
    public var riglAlpha: Double?
    public var riglEnd: Double?
    public var pruneEnd: Double?
    public var strSInit: Double?
    /// The initial mask: `none` (a random ER mask with `density_method`'s ratios), or the mask
    /// itself of a pruner at initialisation, `snip` or `synflow` (the paper's baselines).
    public var maskFrom = "none"
    public var popupLevelsSetting: Int?
    public var popupLevelEpochsSetting: Int?

    public init() {}

    /// YAML key → how to read and write it.
    static let keys: [String] = [
        "model", "classes", "dataset", "data_path", "input", "hidden", "width", "synthetic_train", "synthetic_test",
        "in_memory", "batch_size", "epochs", "lr", "momentum", "nesterov", "weight_decay", "label_smoothing",
        "schedule", "milestones", "gamma", "min_lr", "warmup_epochs", "sparsity", "density_method", "ratios_from", "snip_batches",
        "synflow_shortcuts", "mask_draw",
        "flow", "allow_disconnected", "dense_first", "dense_last", "seed", "threads", "data_threads", "output", "checkpoint_every", "watchdog_seconds",
        "bn", "comm_thread", "sparse_kernels", "convolution", "log_every", "algorithm", "mask_from",
    ] + AlgorithmSettings.allKeys

    /// Keys that say how a run is executed, not what it trains: a resumed run may change them,
    /// and a run that differs only in them is the same run.
    public static let operationalKeys: Set<String> = ["threads", "data_threads", "log_every", "checkpoint_every", "watchdog_seconds"]

    /// Parses YAML text (a mapping) on top of the defaults.
    public static func parse(yaml text: String) throws -> TrainConfig {
        var config = TrainConfig()
        guard !text.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty else { return config }
        let root: Node?
        do { root = try Yams.compose(yaml: text) } catch {
            let detail = "\(error)".split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }
                .filter { !$0.isEmpty && $0 != "^" }.joined(separator: "; ")
            throw ConfigError("config is not valid YAML: \(detail)")
        }
        guard case .mapping(let mapping)? = root else { throw ConfigError("config must be a YAML mapping of keys to values") }
        var values: [String: Any] = [:]
        for (keyNode, valueNode) in mapping {
            guard case .scalar = keyNode, let key = keyNode.string else {
                throw ConfigError("config keys must be plain names (line \(keyNode.mark.map { "\($0.line)" } ?? "?"))")
            }
            // Yams keeps the last of repeated keys: a repeated key is almost always a mistake.
            guard values[key] == nil else {
                throw ConfigError("config sets \(key) twice (line \(keyNode.mark.map { "\($0.line)" } ?? "?")); keep one")
            }
            values[key] = try plainValue(valueNode, key: key)
        }
        for (key, value) in values.sorted(by: { $0.key < $1.key }) { try config.set(key, value) }
        return config
    }

    /// Applies `key=value` (the value parsed as YAML).
    public mutating func apply(override text: String) throws {
        guard let eq = text.firstIndex(of: "="), eq != text.startIndex else {
            throw ConfigError("--set expects key=value, got '\(text)'")
        }
        let key = String(text[..<eq]).trimmingCharacters(in: .whitespaces)
        let raw = String(text[text.index(after: eq)...])
        let node = (try? Yams.compose(yaml: raw)).flatMap { $0 }
        let value = try node.map { try Self.plainValue($0, key: key) } ?? raw
        try set(key, value)
    }

    /// A config value from YAML: a scalar (resolved to Int, Double, Bool, String or null) or a
    /// list of them. Yams builds other shapes itself, and traps on some (mappings with
    /// non-scalar keys), so they are refused here.
    static func plainValue(_ node: Node, key: String) throws -> Any {
        switch node {
        case .scalar: return node.any
        case .sequence(let items): return try items.map { try plainValue($0, key: key) }
        case .mapping: throw ConfigError("\(key) must be a value or a list, not a mapping")
        }
    }

    mutating func set(_ key: String, _ value: Any) throws {
        func int() throws -> Int {
            if let v = value as? Int { return v }
            throw ConfigError("\(key) must be an integer, got '\(value)'")
        }
        func double() throws -> Double {
            if let v = value as? Double { return v }
            if let v = value as? Int { return Double(v) }
            if let s = value as? String, let v = Double(s) { return v }   // "5e-4" is a string in YAML 1.1
            throw ConfigError("\(key) must be a number, got '\(value)'")
        }
        func bool() throws -> Bool {
            if let v = value as? Bool { return v }
            throw ConfigError("\(key) must be true or false, got '\(value)'")
        }
        func string() -> String { "\(value)" }
        /// A choice with on / off among its values: YAML 1.1 reads those as booleans.
        func onOff() -> String {
            let v = string()
            return v == "true" ? "on" : v == "false" ? "off" : v
        }
        func ints() throws -> [Int] {
            if let v = value as? [Int] { return v }
            if let v = value as? Int { return [v] }
            throw ConfigError("\(key) must be a list of integers, got '\(value)'")
        }
        func doubles() throws -> [Double] {
            if let v = value as? [Any] { return try v.map { x in
                if let d = x as? Double { return d }
                if let i = x as? Int { return Double(i) }
                if let s = x as? String, let v = Double(s) { return v }
                throw ConfigError("\(key) must be a list of numbers, got '\(value)'")
            } }
            return [try double()]
        }
        switch key {
        case "model": model = string()
        case "classes": classes = try int()
        case "dataset": dataset = string()
        case "data_path": dataPath = string()
        case "input": input = string()
        case "hidden": hidden = try ints()
        case "width": width = try int()
        case "synthetic_train": syntheticTrain = try int()
        case "synthetic_test": syntheticTest = try int()
        case "in_memory": inMemory = try bool()
        case "batch_size": batchSize = try int()
        case "epochs": epochsSetting = try int()
        case "lr": lr = try double()
        case "momentum": momentum = try double()
        case "nesterov": nesterov = try bool()
        case "weight_decay": weightDecay = try double()
        case "label_smoothing": labelSmoothing = try double()
        case "schedule": schedule = string()
        case "milestones": milestones = try doubles()
        case "gamma": gamma = try double()
        case "min_lr": minLRSetting = try double()
        case "warmup_epochs": warmupEpochs = try double()
        case "sparsity": sparsity = try double()
        case "density_method": densityMethod = string()
        case "ratios_from": ratiosFrom = string()
        case "snip_batches": snipBatches = try int()
        case "synflow_shortcuts": synflowShortcuts = string()
        case "mask_draw": maskDraw = string()
        case "flow": flow = string()
        case "allow_disconnected": allowDisconnected = try bool()
        case "dense_first": denseFirst = try bool()
        case "dense_last": denseLast = try bool()
        case "seed": seed = try int()
        case "threads": threads = try int()
        case "data_threads": dataThreads = try int()
        case "output": output = string()
        case "checkpoint_every": checkpointEvery = try int()
        case "watchdog_seconds": watchdogSeconds = try double()
        case "bn": bn = string()
        case "comm_thread": commThread = onOff()
        case "sparse_kernels": sparseKernels = onOff()
        case "convolution": convolution = string()
        case "log_every": logEvery = try int()
        case "algorithm": algorithm = string()
        case "mask_from": maskFrom = string()
        case "final_sparsity": finalSparsity = try double()
        case "imp_prune_fraction": impPruneFraction = try double()
        case "imp_cycle_epochs": impCycleEpochs = try int()
        case "imp_final_epochs": impFinalEpochs = try int()
        case "imp_rewind_epoch": impRewindEpoch = try int()
        case "rigl_update_every": riglUpdateEvery = try int()
        case "rigl_alpha": riglAlpha = try double()
        case "rigl_end": riglEnd = try double()
        case "prune_end": pruneEnd = try double()
        case "str_s_init": strSInit = try double()
        case "popup_levels": popupLevelsSetting = try int()
        case "popup_level_epochs": popupLevelEpochsSetting = try int()
        default:
            throw ConfigError("unknown config key '\(key)'; valid keys: \(Self.keys.joined(separator: ", "))")
        }
    }

    /// Checks ranges and choices; `worldSize` must divide the batch size.
    public func validate(worldSize: Int) throws {
        func check(_ ok: Bool, _ message: @autoclosure () -> String) throws { if !ok { throw ConfigError(message()) } }
        try check(classes >= 2, "classes must be at least 2")
        try check(["synthetic", "cifar10", "cifar10-binary", "cifar100-binary", "imagefolder", "packed"].contains(dataset),
                  "dataset must be one of synthetic, cifar10, cifar10-binary, cifar100-binary, imagefolder, packed; got '\(dataset)'")
        try check(dataset == "synthetic" || !dataPath.isEmpty, "dataset \(dataset) needs data_path")
        try check(batchSize > 0 && batchSize % worldSize == 0,
                  "batch_size \(batchSize) must be a positive multiple of the \(worldSize) ranks")
        try check(epochs > 0, "epochs must be positive")
        if let w = width {
            try check(["resnet20", "resnet32", "resnet56", "resnet110"].contains(model),
                      "width applies to resnet20, resnet32, resnet56 and resnet110, not \(model)")
            try check(w >= 1, "width must be at least 1; got \(w)")
        }
        try validateAlgorithm()
        try check(lr > 0 && lr.isFinite, "lr must be positive")
        try check(momentum >= 0 && momentum < 1, "momentum must be in [0, 1)")
        try check(weightDecay >= 0, "weight_decay must not be negative")
        try check(labelSmoothing >= 0 && labelSmoothing < 1, "label_smoothing must be in [0, 1)")
        try check(["constant", "multistep", "cosine"].contains(schedule), "schedule must be constant, multistep or cosine; got '\(schedule)'")
        try check(milestones.allSatisfy { $0 > 0 && $0 < 1 }, "milestones are fractions of the epochs, each in (0, 1)")
        try check(gamma > 0 && gamma <= 1, "gamma must be in (0, 1]")
        try check(minLR >= 0 && minLR <= lr, "min_lr must be in [0, lr]")
        try check(warmupEpochs >= 0 && warmupEpochs < Double(phaseEpochsShortest), "warmup_epochs must be shorter than a schedule phase (\(phaseEpochsShortest) epochs)")
        try check(sparsity.isFinite && sparsity >= 0 && sparsity < 1, "sparsity must be in [0, 1); got \(sparsity)")
        let methods = ["uniform", "erk", "er", "balanced", "pyramidal", "er-synflow", "er-snip", "er-imp"]
        try check(methods.contains(densityMethod), "density_method must be one of \(methods.joined(separator: ", ")); got '\(densityMethod)'")
        try check(densityMethod != "er-imp" || !ratiosFrom.isEmpty, "density_method er-imp needs ratios_from (a checkpoint of the pruned run)")
        try check(snipBatches >= 1, "snip_batches must be at least 1")
        try check(["none", "snip", "synflow"].contains(maskFrom), "mask_from must be none, snip or synflow; got '\(maskFrom)'")
        try check(["prune", "dense"].contains(synflowShortcuts), "synflow_shortcuts must be dense or prune; got '\(synflowShortcuts)'")
        try check(["count", "bernoulli"].contains(maskDraw), "mask_draw must be count or bernoulli")
        try check(["none", "random-addition", "rejection"].contains(flow), "flow must be none, random-addition or rejection")
        try check(hidden.allSatisfy { $0 >= 1 }, "hidden widths of the MLP must be at least 1; got \(hidden)")
        try check(width.map { $0 >= 1 } ?? true, "width must be at least 1")
        try check(seed >= 0, "seed must not be negative")
        try check(threads >= 1 && dataThreads >= 1, "threads and data_threads must be at least 1")
        try check(!output.isEmpty, "output must name a directory")
        try check(checkpointEvery >= 1, "checkpoint_every must be at least 1")
        try check(watchdogSeconds.isFinite && watchdogSeconds >= 0, "watchdog_seconds must be ≥ 0 (0 turns it off)")
        try check(["local", "sync"].contains(bn), "bn must be local or sync")
        try check(["auto", "on", "off"].contains(commThread), "comm_thread must be auto, on or off; got '\(commThread)'")
        try check(SparseKernelMode(rawValue: sparseKernels) != nil, "sparse_kernels must be auto, on or off; got '\(sparseKernels)'")
        try check(ConvolutionAlgorithm(rawValue: convolution) != nil,
                  "convolution must be one of \(ConvolutionAlgorithm.allCases.map(\.rawValue).joined(separator: ", ")); got '\(convolution)'")
        try check(logEvery >= 1, "log_every must be at least 1")
        try check(syntheticTrain > 0 && syntheticTest > 0, "synthetic_train and synthetic_test must be positive")
    }

    /// The config as YAML, every key present (what `config.yaml` in a run directory holds).
    public func yaml() -> String {
        func list<T>(_ v: [T]) -> String { "[" + v.map { "\($0)" }.joined(separator: ", ") + "]" }
        func q(_ s: String) -> String { "\"" + s.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"") + "\"" }
        var lines: [(String, String?)] = [
            ("model", q(model)), ("classes", "\(classes)"), ("dataset", q(dataset)), ("data_path", q(dataPath)),
            ("input", q(input)), ("hidden", list(hidden)), ("width", width.map { "\($0)" }), ("synthetic_train", "\(syntheticTrain)"),
            ("synthetic_test", "\(syntheticTest)"), ("in_memory", "\(inMemory)"), ("batch_size", "\(batchSize)"),
            ("epochs", epochsSetting.map { "\($0)" }), ("lr", "\(lr)"), ("momentum", "\(momentum)"),
            ("nesterov", "\(nesterov)"), ("weight_decay", "\(weightDecay)"), ("label_smoothing", "\(labelSmoothing)"),
            ("schedule", q(schedule)), ("milestones", list(milestones)), ("gamma", "\(gamma)"),
            ("min_lr", minLRSetting.map { "\($0)" }), ("warmup_epochs", "\(warmupEpochs)"), ("sparsity", "\(sparsity)"),
            ("density_method", q(densityMethod)), ("ratios_from", q(ratiosFrom)), ("snip_batches", "\(snipBatches)"),
            ("synflow_shortcuts", q(synflowShortcuts)),
            ("mask_draw", q(maskDraw)), ("flow", q(flow)), ("allow_disconnected", "\(allowDisconnected)"), ("dense_first", "\(denseFirst)"), ("dense_last", "\(denseLast)"),
            ("seed", "\(seed)"), ("threads", "\(threads)"), ("data_threads", "\(dataThreads)"), ("output", q(output)),
            ("checkpoint_every", "\(checkpointEvery)"), ("watchdog_seconds", "\(watchdogSeconds)"), ("bn", q(bn)), ("comm_thread", q(commThread)), ("sparse_kernels", q(sparseKernels)), ("convolution", q(convolution)), ("log_every", "\(logEvery)"),
            ("algorithm", q(algorithm)), ("mask_from", q(maskFrom)),
        ]
        lines += algorithmValues()
        return lines.compactMap { key, value in value.map { "\(key): \($0)\n" } }.joined()
    }
}

/// A problem with the configuration or the run directory, as one line.
public struct ConfigError: Error, CustomStringConvertible, Equatable {
    public let description: String
    public init(_ message: String) { description = message }
}
