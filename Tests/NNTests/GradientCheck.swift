import XCTest
@testable import NN
import Tensor

/// Finite-difference check of a layer's backward pass.
///
/// Objective `L = Σ r ⊙ layer(x)` with random `r`; analytic gradients from `backward(r)`,
/// numeric ones from central differences `(L(θ+h) − L(θ−h)) / 2h` at sampled coordinates of the
/// input and of every parameter tensor. L is accumulated in Double.
struct GradientCheck {
    var step: Float = 1e-2
    var tolerance: Float = 2e-2
    var samples = 24
    var training = true
    var convolution = ConvolutionAlgorithm.automatic

    func run(_ layer: Layer, store: ParameterStore, input shape: Shape, seed: UInt64 = 1,
             checkInput: Bool = true, file: StaticString = #filePath, line: UInt = #line) {
        let ctx = Context()
        ctx.training = training
        ctx.convolutionAlgorithm = convolution
        var rng = Xoshiro256(seed: seed)
        let x = Tensor(shape)
        for i in 0..<x.count { x.data[i] = rng.nextFloat() * 2 - 1 }
        let outShape = try! layer.outputShape(for: shape)
        let r = Tensor(outShape)
        for i in 0..<r.count { r.data[i] = rng.nextFloat() * 2 - 1 }

        func objective() -> Double {
            let y = layer.forward(x, ctx)
            XCTAssertEqual(y.shape, outShape, file: file, line: line)
            var s = 0.0
            for i in 0..<y.count { s += Double(y.data[i]) * Double(r.data[i]) }
            return s
        }

        _ = objective()
        store.zeroGradients()
        let dxTensor = layer.backward(r, ctx)
        let dx = Array(UnsafeBufferPointer(start: dxTensor.data, count: checkInput ? x.count : 0))
        let grads = Array(store.gradients)

        func compare(_ p: UnsafeMutablePointer<Float>, _ count: Int, analytic: (Int) -> Float, what: String) {
            for k in 0..<min(samples, count) {
                let i = count <= samples ? k : rng.nextIndex(below: count)
                let saved = p[i]
                p[i] = saved + step
                let plus = objective()
                p[i] = saved - step
                let minus = objective()
                p[i] = saved
                let numeric = Float((plus - minus) / (2 * Double(step)))
                let a = analytic(i)
                let scale = max(1, abs(numeric), abs(a))
                if abs(numeric - a) > tolerance * scale {
                    XCTFail("\(what)[\(i)]: analytic \(a), numeric \(numeric)", file: file, line: line)
                    return
                }
            }
        }
        if checkInput { compare(x.data, x.count, analytic: { dx[$0] }, what: "input") }
        for p in store.parameters {
            compare(store.value(p.ref), p.ref.count, analytic: { grads[p.ref.offset + $0] }, what: p.name)
        }
    }
}
