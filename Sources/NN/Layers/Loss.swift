import Foundation
import Tensor

/// Softmax cross-entropy on logits (K, N) with optional label smoothing ε:
/// target `q = (1 − ε)·onehot(y) + ε/K`, loss `Σ_n −Σ_k q_k log p_k / normalizer`,
/// gradient `(p − q) / normalizer`. The normalizer is the batch size, or the global batch size
/// when ranks sum their gradients.
public final class SoftmaxCrossEntropy {
    public let labelSmoothing: Float
    public let gradient = Tensor()

    public init(labelSmoothing: Float = 0) { self.labelSmoothing = labelSmoothing }

    /// Returns (summed loss / normalizer, number of correct top-1 predictions) and fills
    /// `gradient` with dL/dlogits.
    public func callAsFunction(
        _ logits: Tensor, labels: UnsafePointer<Int32>, normalizer: Float, ctx: Context
    ) -> (loss: Float, correct: Int) {
        ctx.timed(.loss) {
            let k = logits.shape.c, n = logits.shape.n
            gradient.reshape(logits.shape)
            let z = logits.data, g = gradient.data
            let eps = labelSmoothing
            var total = 0.0
            var correct = 0
            for i in 0..<n {
                var mx = -Float.infinity
                var arg = 0
                for c in 0..<k where z[c * n + i] > mx { mx = z[c * n + i]; arg = c }
                var denom: Float = 0
                for c in 0..<k { denom += expf(z[c * n + i] - mx) }
                let logDenom = logf(denom)
                let y = Int(labels[i])
                if arg == y { correct += 1 }
                var li: Float = 0
                for c in 0..<k {
                    let logp = z[c * n + i] - mx - logDenom
                    let q = (c == y ? 1 - eps : 0) + eps / Float(k)
                    li -= q * logp
                    g[c * n + i] = (expf(logp) - q) / normalizer
                }
                total += Double(li)
            }
            return (Float(total / Double(normalizer)), correct)
        }
    }
}

/// Number of columns of `logits` (K, N) whose label is among the `k` largest entries.
public func topKCorrect(_ logits: Tensor, labels: UnsafePointer<Int32>, k: Int) -> Int {
    let classes = logits.shape.c, n = logits.shape.n
    var correct = 0
    for i in 0..<n {
        let y = Int(labels[i])
        let target = logits.data[y * n + i]
        var above = 0
        for c in 0..<classes where c != y {
            let v = logits.data[c * n + i]
            if v > target || (v == target && c < y) { above += 1 }
        }
        if above < k { correct += 1 }
    }
    return correct
}
