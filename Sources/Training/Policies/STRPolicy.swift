import Foundation
import NN
import Sparsity

/// STR inside the ER mask (see `AlgorithmSettings`): the model trains through `SoftThreshold`; at
/// the end of every epoch rank 0 turns the weights at or below their layer's threshold into mask
/// zeros (`m ← m ∧ |w| > σ(s_l)`), so the mask only shrinks, the reducer and the kernels follow it,
/// and the checkpoint's mask is the learned one.
final class STRPolicy: MaskPolicy {
    let epochs: Int, stepsPerEpoch: Int
    let threshold: SoftThreshold

    init(epochs: Int, stepsPerEpoch: Int, threshold: SoftThreshold) {
        self.epochs = epochs
        self.stepsPerEpoch = stepsPerEpoch
        self.threshold = threshold
    }

    func phase(containing epoch: Int) -> SchedulePhase { SchedulePhase(start: 0, length: epochs, name: "training") }
    func changesMask(afterStep t: Int) -> Bool { t % stepsPerEpoch == 0 }
    func needsDenseGradient(atStep t: Int) -> Bool { false }

    func propose(afterStep t: Int, masks: MaskState, proposal: UnsafeMutableBufferPointer<Float>) -> String {
        threshold.keepAboveThreshold(masks.store, proposal: proposal)
        return "str threshold"
    }

    /// STR's initial `s` (ALGORITHMS §5.2): weight decay alone moves `s` as
    /// `s_t ≈ s_0·exp(−λ Σ η / (1 − μ))`, so the threshold switches on (σ(s) ≈ 1e-4, s ≈ −9) at the
    /// same fraction of training as in the paper's runs (s_0 = −200, 100 epochs of 196 steps, 5 warm-up
    /// epochs then cosine to 0 from 0.1, μ = 0.9) when `ln(|s_0|/9) / (Σ η/(1 − μ))` is the same:
    /// `s_0 = −9 · (200/9)^(r)`, `r = (Σ η/(1 − μ)) / (Σ η_paper/(1 − 0.9))` (same λ).
    static func initialThreshold(learningRateSum: Double, momentum: Double) -> Double {
        let ratio = (learningRateSum / (1 - momentum)) / (paperLearningRateSum / (1 - 0.9))
        return -9 * pow(200.0 / 9, ratio)
    }

    /// Σ η over the paper's STR runs: per epoch e, η = 0.1·(e+1)/5 for e < 5, then
    /// ½(1 + cos(π(e − 5)/95))·0.1, set once per epoch, 196 steps each (= 999.6).
    static var paperLearningRateSum: Double {
        (0..<100).reduce(0.0) { sum, e in
            let eta = e < 5 ? 0.1 * Double(e + 1) / 5 : 0.05 * (1 + cos(Double.pi * Double(e - 5) / 95))
            return sum + 196 * eta
        }
    }
}
