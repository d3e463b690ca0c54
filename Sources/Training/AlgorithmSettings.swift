import Foundation

/// The algorithms `train` runs and the config keys that belong to each.
///
/// - `fixed`: the initial ER mask for the whole run.
/// - `imp`: iterative magnitude pruning from the initial mask (ER or dense) to `final_sparsity`:
///   cycles of `imp_cycle_epochs`, each ending with a global magnitude prune of
///   `imp_prune_fraction` of the remaining weights (the last cycle lands exactly on
///   `final_sparsity`), a rewind of all weights and BN affine parameters to `imp_rewind_epoch`
///   (0 = initialisation), cleared momentum and a restarted LR schedule; then a final retrain of
///   `imp_final_epochs`. BN running statistics are not rewound (as in the paper's code).
/// - `rigl`: every `rigl_update_every` steps each layer drops ⌈α_t·nnz⌉ weights of smallest |w|
///   and grows as many of largest |dense gradient|, α_t = α/2·(1 + cos(π t / T_end)), until
///   `rigl_end` of training. With `final_sparsity` above `sparsity` it is prune-and-rewire: before
///   each rewiring a global magnitude prune follows the cubic schedule
///   d_k = d_f + (d_i − d_f)(1 − k/n)³ and reaches `final_sparsity` exactly at `prune_end`.
/// - `str`: STR's learned per-layer soft threshold inside the mask, starting at `str_s_init`
///   (default: `STRPolicy.initialThreshold`); weights under the threshold leave the mask at
///   every epoch's end.
/// - `edge-popup`: frozen weights, trained scores, exactly k_l weights per layer, k annealed over
///   `popup_levels` levels of `popup_level_epochs` to `final_sparsity` (see `EdgePopupPolicy`).
public enum AlgorithmSettings {
    /// Algorithms `train` runs.
    public static let available = ["fixed", "imp", "rigl", "str", "edge-popup"]
    /// Keys of each algorithm.
    public static let keys: KeyValuePairs<String, [String]> = [
        "imp": ["final_sparsity", "imp_prune_fraction", "imp_cycle_epochs", "imp_final_epochs", "imp_rewind_epoch"],
        "rigl": ["final_sparsity", "rigl_update_every", "rigl_alpha", "rigl_end", "prune_end"],
        "str": ["str_s_init"],
        "edge-popup": ["final_sparsity", "popup_levels", "popup_level_epochs"],
    ]
    /// Density rules edge-popup can take its final layer ratios from.
    static let popupDensityMethods = ["uniform", "erk", "er", "balanced", "pyramidal"]
    /// Every algorithm key once.
    static var allKeys: [String] {
        var seen = Set<String>()
        return keys.flatMap(\.value).filter { seen.insert($0).inserted }
    }
    static func keys(of algorithm: String) -> [String] { keys.first { $0.key == algorithm }?.value ?? [] }

    public static let defaultPruneFraction = 0.2
    public static let defaultCycleEpochs = 10
    public static let defaultUpdateEvery = 100
    public static let defaultAlpha = 0.5
    public static let defaultRigLEnd = 0.75
    /// 110 of 160 epochs, where the paper's code stops its gradual pruning.
    public static let defaultPruneEnd = 0.6875
    public static let defaultLevels = 5
    public static let defaultLevelEpochs = 10
}

extension TrainConfig {
    /// Algorithm keys as (key, value) with nil for unset ones, for YAML output.
    func algorithmValues() -> [(String, String?)] {
        [
            ("final_sparsity", finalSparsity.map { "\($0)" }),
            ("imp_prune_fraction", impPruneFraction.map { "\($0)" }), ("imp_cycle_epochs", impCycleEpochs.map { "\($0)" }),
            ("imp_final_epochs", impFinalEpochs.map { "\($0)" }), ("imp_rewind_epoch", impRewindEpoch.map { "\($0)" }),
            ("rigl_update_every", riglUpdateEvery.map { "\($0)" }), ("rigl_alpha", riglAlpha.map { "\($0)" }),
            ("rigl_end", riglEnd.map { "\($0)" }), ("prune_end", pruneEnd.map { "\($0)" }),
            ("str_s_init", strSInit.map { "\($0)" }),
            ("popup_levels", popupLevelsSetting.map { "\($0)" }), ("popup_level_epochs", popupLevelEpochsSetting.map { "\($0)" }),
        ]
    }

    /// Checks the algorithm and its keys: one line naming the key and the valid choices.
    func validateAlgorithm() throws {
        func check(_ ok: Bool, _ message: @autoclosure () -> String) throws { if !ok { throw ConfigError(message()) } }
        try check(AlgorithmSettings.available.contains(algorithm),
                  "algorithm must be one of \(AlgorithmSettings.available.joined(separator: ", ")); got '\(algorithm)'")
        let own = AlgorithmSettings.keys(of: algorithm)
        for (key, value) in algorithmValues() where value != nil && !own.contains(key) {
            let owners = AlgorithmSettings.keys.filter { $0.value.contains(key) }.map(\.key).joined(separator: " or ")
            throw ConfigError("\(key) belongs to algorithm \(owners), not \(algorithm)"
                + (own.isEmpty ? " (which has no keys of its own)" : "; keys of \(algorithm): \(own.joined(separator: ", "))"))
        }
        switch algorithm {
        case "imp":
            try check(epochsSetting == nil, "epochs does not apply to algorithm imp: its length is the cycles × imp_cycle_epochs + imp_final_epochs")
            guard let final = finalSparsity else { throw ConfigError("algorithm imp needs final_sparsity (above sparsity \(sparsity))") }
            try check(final.isFinite && final > sparsity && final < 1,
                      "final_sparsity must be above sparsity (\(sparsity)) and below 1 for imp; got \(final)")
            let f = impPruneFraction ?? AlgorithmSettings.defaultPruneFraction
            try check(f > 0 && f < 1, "imp_prune_fraction must be in (0, 1); got \(f)")
            try check(cycleEpochs >= 1, "imp_cycle_epochs must be at least 1; got \(cycleEpochs)")
            try check(finalEpochs >= 1, "imp_final_epochs must be at least 1; got \(finalEpochs)")
            let rewind = impRewindEpoch ?? 0
            try check(rewind >= 0 && rewind < cycleEpochs, "imp_rewind_epoch must be in [0, imp_cycle_epochs) = [0, \(cycleEpochs)); got \(rewind)")
        case "rigl":
            let final = finalSparsity ?? sparsity
            try check(final.isFinite && final >= sparsity && final < 1,
                      "final_sparsity must be in [sparsity, 1) = [\(sparsity), 1) for rigl (prune-and-rewire only prunes); got \(final)")
            let every = riglUpdateEvery ?? AlgorithmSettings.defaultUpdateEvery
            try check(every >= 1, "rigl_update_every must be at least 1 step; got \(every)")
            let alpha = riglAlpha ?? AlgorithmSettings.defaultAlpha
            try check(alpha > 0 && alpha <= 1, "rigl_alpha must be in (0, 1]; got \(alpha)")
            let end = riglEnd ?? AlgorithmSettings.defaultRigLEnd
            try check(end > 0 && end <= 1, "rigl_end must be a fraction of training in (0, 1]; got \(end)")
            if let p = pruneEnd {
                try check(final > sparsity, "prune_end applies only to prune-and-rewire (final_sparsity above sparsity)")
                try check(p > 0 && p <= 1, "prune_end must be a fraction of training in (0, 1]; got \(p)")
            }
        case "str":
            if let s = strSInit { try check(s.isFinite, "str_s_init must be a finite number; got \(s)") }
        case "edge-popup":
            try check(epochsSetting == nil, "epochs does not apply to algorithm edge-popup: its length is popup_levels × popup_level_epochs")
            guard let final = finalSparsity else { throw ConfigError("algorithm edge-popup needs final_sparsity (at least sparsity \(sparsity))") }
            try check(final.isFinite && final >= sparsity && final < 1,
                      "final_sparsity must be in [sparsity, 1) = [\(sparsity), 1) for edge-popup; got \(final)")
            try check(popupLevels >= 1, "popup_levels must be at least 1; got \(popupLevels)")
            try check(popupLevelEpochs >= 1, "popup_level_epochs must be at least 1; got \(popupLevelEpochs)")
            try check(AlgorithmSettings.popupDensityMethods.contains(densityMethod),
                      "edge-popup takes its final layer ratios from a density rule: density_method must be one of \(AlgorithmSettings.popupDensityMethods.joined(separator: ", ")); got \(densityMethod)")
        default:
            break
        }
    }

    var popupLevels: Int { popupLevelsSetting ?? AlgorithmSettings.defaultLevels }
    var popupLevelEpochs: Int { popupLevelEpochsSetting ?? AlgorithmSettings.defaultLevelEpochs }

    var cycleEpochs: Int { impCycleEpochs ?? AlgorithmSettings.defaultCycleEpochs }
    var finalEpochs: Int { impFinalEpochs ?? cycleEpochs }

    /// IMP's cycle plan (valid once `validate` passed).
    var impPlan: IMPPlan {
        IMPPlan(startDensity: 1 - sparsity, finalDensity: 1 - (finalSparsity ?? sparsity),
                fraction: impPruneFraction ?? AlgorithmSettings.defaultPruneFraction)
    }

    /// Epochs the run trains: `epochs`, or for IMP cycles × cycle epochs + final epochs.
    public var totalEpochs: Int {
        switch algorithm {
        case "imp": return impPlan.cycles * cycleEpochs + finalEpochs
        case "edge-popup": return popupLevels * popupLevelEpochs
        default: return epochs
        }
    }

    /// The shortest stretch over which the LR schedule runs (warm-up must fit in it).
    var phaseEpochsShortest: Int {
        switch algorithm {
        case "imp": return min(cycleEpochs, finalEpochs)
        case "edge-popup": return popupLevelEpochs
        default: return epochs
        }
    }
}

/// IMP's densities: cycle k ends at `d_0·(1 − f)^k`, except the last (cycle L), which ends at
/// `d_f` exactly; `L` is the fewest cycles that reach `d_f` removing at most `f` per cycle.
public struct IMPPlan: Sendable, Equatable {
    public var startDensity: Double
    public var finalDensity: Double
    public var fraction: Double

    public var cycles: Int {
        guard finalDensity < startDensity else { return 0 }
        var l = 1
        while startDensity * pow(1 - fraction, Double(l)) > finalDensity * (1 + 1e-12) { l += 1 }
        return l
    }

    /// Active weights after cycle `k` (1…cycles), given the active count `start` at the beginning
    /// and `total` maskable weights: `round(start·(1 − f)^k)`, never below the final count, and
    /// exactly `round(d_f·total)` after the last cycle.
    public func activeCount(afterCycle k: Int, start: Int, total: Int) -> Int {
        let final = Int((finalDensity * Double(total)).rounded())
        guard k < cycles else { return final }
        return max(final, Int((Double(start) * pow(1 - fraction, Double(k))).rounded()))
    }
}
