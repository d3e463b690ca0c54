import Foundation

/// One of the paper's claims checked on the runs at hand: the groups it compares, and what the
/// runs say.
public struct ClaimCheck: Equatable {
    public enum Verdict: String {
        /// The runs agree with the claim.
        case confirmed
        /// The runs contradict it.
        case contradicted = "not confirmed"
        /// The 95% intervals of the two sides overlap: the seeds cannot tell.
        case inconclusive
    }

    public let claim: String
    public let verdict: Verdict
    /// The numbers behind the verdict, in words.
    public let evidence: String
}

/// The paper's headline claims that runs of Tables 1, 2, 4 and 28 can check, for every setting
/// the runs cover (model and sparsity as run; the budget is whatever the runs used):
/// - balanced and pyramidal ER ratios do at least as well as uniform ones at sparsity 0.99;
/// - rewiring (RiGL at fixed density, or prune-and-rewire to 0.99) beats the fixed ER mask at 0.99;
/// - IMP from an ER start matches IMP from dense (within 1 point) at a fraction of the cost.
/// A comparison of means is "inconclusive" when both sides have intervals (2+ seeds) and they
/// overlap; with one seed the means decide, and the evidence says so.
public func checkPaperClaims(_ groups: [RunGroup]) -> [ClaimCheck] {
    func find(_ match: (RunRecord) -> Bool) -> [RunGroup] { groups.filter { match($0.runs[0]) } }
    func fixed(_ r: RunRecord, _ method: String, _ s: Double) -> Bool {
        r.config.algorithm == "fixed" && r.config.densityMethod == method && r.config.sparsity == s && r.config.maskFrom == "none"
    }
    var checks: [ClaimCheck] = []
    let models = Array(Set(groups.map { $0.runs[0].config.model })).sorted()
    for model in models {
        let inModel = { (r: RunRecord) in r.config.model == model }
        // Ratios at 0.99.
        for method in ["balanced", "pyramidal"] {
            for better in find({ inModel($0) && fixed($0, method, 0.99) }) {
                for uniform in find({ inModel($0) && fixed($0, "uniform", 0.99) }) {
                    checks.append(compare(claim: "\(model): \(method) ER ratios ≥ uniform at sparsity 0.99 (fixed mask)",
                                          better, uniform, atLeast: true))
                }
            }
        }
        // Rewiring against the fixed mask at 0.99, same ratios.
        for rewired in find({ inModel($0) && $0.config.algorithm == "rigl" && $0.targetSparsity == 0.99 }) {
            let r = rewired.runs[0]
            for base in find({ inModel($0) && fixed($0, r.config.densityMethod, 0.99) }) {
                let what = r.config.sparsity == 0.99 ? "RiGL rewiring at 0.99" : String(format: "prune-and-rewire %g → 0.99", r.config.sparsity)
                checks.append(compare(claim: "\(model): \(what) beats the fixed \(r.config.densityMethod) ER mask at 0.99", rewired, base, atLeast: false))
            }
        }
        // IMP from ER against IMP from dense, same final sparsity.
        for er in find({ inModel($0) && $0.config.algorithm == "imp" && $0.config.sparsity > 0 }) {
            let target = er.runs[0].targetSparsity
            for dense in find({ inModel($0) && $0.config.algorithm == "imp" && $0.config.sparsity == 0 && $0.targetSparsity == target }) {
                checks.append(impCheck(model: model, er: er, dense: dense))
            }
        }
    }
    return checks
}

/// `a` better than `b` (or at least as good with `atLeast`) in final test accuracy.
func compare(claim: String, _ a: RunGroup, _ b: RunGroup, atLeast: Bool) -> ClaimCheck {
    let x = a.finalAccuracy, y = b.finalAccuracy
    let evidence = "\(a.label) \(x.formatted(scale: 100)) % against \(b.label) \(y.formatted(scale: 100)) %" + seedsNote(a, b)
    if let hx = x.halfWidth, let hy = y.halfWidth, abs(x.mean - y.mean) <= hx + hy {
        return ClaimCheck(claim: claim, verdict: .inconclusive, evidence: evidence + "; the 95% intervals overlap")
    }
    let holds = atLeast ? x.mean >= y.mean : x.mean > y.mean
    return ClaimCheck(claim: claim, verdict: holds ? .confirmed : .contradicted, evidence: evidence)
}

/// IMP from ER within 1 point of IMP from dense, with what each cost.
func impCheck(model: String, er: RunGroup, dense: RunGroup) -> ClaimCheck {
    let x = er.finalAccuracy.mean, y = dense.finalAccuracy.mean
    let claim = String(format: "%@: IMP from an ER start (%g) matches IMP from dense at sparsity %g, at a fraction of the cost",
                       model, er.runs[0].config.sparsity, er.runs[0].targetSparsity)
    let cost = String(format: "; epochs %d vs %d, wall time %.0f vs %.0f s (%.0f%%), %.0f vs %.0f MB allreduced (%.0f%%)",
                      er.runs[0].epochs.count, dense.runs[0].epochs.count, er.wallSeconds.mean, dense.wallSeconds.mean,
                      100 * er.wallSeconds.mean / max(dense.wallSeconds.mean, 1e-9),
                      er.megabytesAllreduced.mean, dense.megabytesAllreduced.mean,
                      100 * er.megabytesAllreduced.mean / max(dense.megabytesAllreduced.mean, 1e-9))
    let evidence = "from ER \(er.finalAccuracy.formatted(scale: 100)) % against from dense \(dense.finalAccuracy.formatted(scale: 100)) %" + cost + seedsNote(er, dense)
    let cheaper = er.wallSeconds.mean < dense.wallSeconds.mean
    return ClaimCheck(claim: claim, verdict: x >= y - 0.01 && cheaper ? .confirmed : .contradicted, evidence: evidence)
}

private func seedsNote(_ a: RunGroup, _ b: RunGroup) -> String {
    a.runs.count == 1 || b.runs.count == 1 ? " (one seed: no interval)" : ""
}

/// The checks as a markdown section (empty when there are none).
public func claimsMarkdown(_ checks: [ClaimCheck]) -> String {
    guard !checks.isEmpty else { return "" }
    return "\n## The paper's claims on these runs\n\n" + checks.map { "- **\($0.verdict.rawValue)**: \($0.claim) — \($0.evidence)\n" }.joined()
}
