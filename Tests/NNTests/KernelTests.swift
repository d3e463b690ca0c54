import XCTest
@testable import NN
import Tensor

/// Fast kernels against naive references.
final class KernelTests: XCTestCase {
    /// Direct convolution on channel-major tensors, accumulated in Double.
    func naiveConv(_ x: [Float], _ s: Shape, _ w: [Float], cout: Int, k: Int, stride: Int, pad: Int) -> [Float] {
        let ho = (s.h + 2 * pad - k) / stride + 1, wo = (s.w + 2 * pad - k) / stride + 1
        var y = [Float](repeating: 0, count: cout * s.n * ho * wo)
        for o in 0..<cout { for n in 0..<s.n { for oh in 0..<ho { for ow in 0..<wo {
            var acc = 0.0
            for c in 0..<s.c { for i in 0..<k { for j in 0..<k {
                let ih = oh * stride - pad + i, iw = ow * stride - pad + j
                guard ih >= 0, ih < s.h, iw >= 0, iw < s.w else { continue }
                acc += Double(x[((c * s.n + n) * s.h + ih) * s.w + iw]) * Double(w[((o * s.c + c) * k + i) * k + j])
            } } }
            y[((o * s.n + n) * ho + oh) * wo + ow] = Float(acc)
        } } } }
        return y
    }

    func testConvolutionForwardMatchesDirectConvolution() {
        let cases = [(3, 5, 3, 1, 1, 7, 9), (2, 4, 3, 2, 1, 9, 8), (5, 3, 1, 1, 0, 4, 5),
                     (4, 6, 1, 2, 0, 7, 7), (3, 2, 7, 2, 3, 11, 10), (1, 1, 2, 2, 0, 5, 5)]
        for (t, (cin, cout, k, st, p, h, w)) in cases.enumerated() {
            let store = ParameterStore()
            let conv = Conv2d("c", store: store, inChannels: cin, outChannels: cout, kernelSize: k, stride: st, padding: p)
            store.allocate(seed: UInt64(t))
            let s = Shape(n: 3, c: cin, h: h, w: w)
            let x = Tensor(s)
            var rng = Xoshiro256(seed: UInt64(100 + t))
            for i in 0..<x.count { x.data[i] = rng.nextFloat() * 2 - 1 }
            let ctx = Context()
            ctx.columnBudget = t % 2 == 0 ? 1 << 24 : 1   // odd cases: one image per GEMM
            let y = conv.forward(x, ctx)
            let expected = naiveConv(Array(x.buffer), s, Array(UnsafeBufferPointer(start: store.value(conv.weight), count: conv.weight.count)),
                                     cout: cout, k: k, stride: st, pad: p)
            XCTAssertEqual(y.count, expected.count)
            for i in 0..<expected.count {
                if abs(y.data[i] - expected[i]) > 1e-4 * max(1, abs(expected[i])) {
                    return XCTFail("case \(t) at \(i): \(y.data[i]) vs \(expected[i])")
                }
            }
        }
    }

    /// Workers run col2im on neighbouring images at the same time, so it must not touch memory
    /// of other images, not even to add zero: −0 + 0 would turn into +0 here.
    func testCol2imTouchesOnlyItsOwnImages() {
        for g in [ConvGeometry(channels: 2, height: 5, width: 6, kernelH: 3, kernelW: 3, stride: 1, padding: 1),
                  ConvGeometry(channels: 2, height: 6, width: 6, kernelH: 3, kernelW: 3, stride: 2, padding: 1)] {
            let batch = 4, first = 1, count = 2
            var dx = [Float](repeating: -0.0, count: g.channels * batch * g.inPlane)
            var col = [Float](repeating: 0.5, count: g.patchSize * count * g.outPlane)
            col2im(&col, batch: batch, first: first, count: count, geometry: g, dx: &dx)
            for c in 0..<g.channels {
                for n in 0..<batch where n < first || n >= first + count {
                    let plane = (c * batch + n) * g.inPlane
                    for k in plane..<(plane + g.inPlane) where dx[k].bitPattern != (-0.0 as Float).bitPattern {
                        return XCTFail("stride \(g.stride): col2im of images \(first)..<\(first + count) wrote \(dx[k]) into image \(n)")
                    }
                }
            }
        }
    }

    func testCol2imIsTheAdjointOfIm2col() {
        let geometries = [
            ConvGeometry(channels: 3, height: 7, width: 6, kernelH: 3, kernelW: 3, stride: 2, padding: 1),
            ConvGeometry(channels: 2, height: 5, width: 6, kernelH: 3, kernelW: 3, stride: 1, padding: 1),
            ConvGeometry(channels: 2, height: 6, width: 4, kernelH: 5, kernelW: 5, stride: 1, padding: 2),
            ConvGeometry(channels: 2, height: 6, width: 5, kernelH: 3, kernelW: 3, stride: 1, padding: 0),
        ]
        for g in geometries {
            let batch = 4, first = 1, count = 2
            var rng = Xoshiro256(seed: 5)
            let x = (0..<(g.channels * batch * g.inPlane)).map { _ in rng.nextFloat() - 0.5 }
            let c = (0..<(g.patchSize * count * g.outPlane)).map { _ in rng.nextFloat() - 0.5 }
            var col = [Float](repeating: 0, count: c.count)
            var dx = [Float](repeating: 0, count: x.count)
            col.withUnsafeMutableBufferPointer { im2col(x, batch: batch, first: first, count: count, geometry: g, col: $0.baseAddress!) }
            var scratch = c
            scratch.withUnsafeMutableBufferPointer { s in
                dx.withUnsafeMutableBufferPointer { col2im(s.baseAddress!, batch: batch, first: first, count: count, geometry: g, dx: $0.baseAddress!) }
            }
            let lhs = zip(col, c).reduce(0.0) { $0 + Double($1.0) * Double($1.1) }
            let rhs = zip(x, dx).reduce(0.0) { $0 + Double($1.0) * Double($1.1) }
            XCTAssertEqual(lhs, rhs, accuracy: 1e-4, "\(g)")
            // Images outside first..<first+count are untouched.
            XCTAssertTrue(dx[0..<g.inPlane].allSatisfy { $0 == 0 })
        }
    }

    func testMaxPoolTilingPathMatchesNaiveMax() {
        let s = Shape(n: 3, c: 2, h: 6, w: 8)
        let x = Tensor(s)
        var rng = Xoshiro256(seed: 12)
        for i in 0..<x.count { x.data[i] = Float(rng.nextIndex(below: 5)) }   // many ties
        let y = MaxPool2d(kernelSize: 2).forward(x, Context())
        for pl in 0..<(s.c * s.n) { for oh in 0..<3 { for ow in 0..<4 {
            let p = x.data + pl * 48
            let m = max(p[2 * oh * 8 + 2 * ow], p[2 * oh * 8 + 2 * ow + 1], p[(2 * oh + 1) * 8 + 2 * ow], p[(2 * oh + 1) * 8 + 2 * ow + 1])
            XCTAssertEqual(y.data[pl * 12 + oh * 4 + ow], m)
        } } }
    }

    /// The 2×2 tiling path, eight windows at a time plus a scalar tail (wo = 17), against the
    /// general path's rule: the max, the first of ties in row-major window order, and backward
    /// routing each gradient to that input only.
    func testMaxPoolVectorPathMatchesTheRule() {
        let s = Shape(n: 2, c: 3, h: 6, w: 34)
        let x = Tensor(s)
        var rng = Xoshiro256(seed: 4)
        for i in 0..<x.count { x.data[i] = Float(rng.nextIndex(below: 3)) }   // many ties
        let pool = MaxPool2d(kernelSize: 2), ctx = Context()
        let y = pool.forward(x, ctx)
        let (ho, wo) = (3, 17)
        var expected = [Float](repeating: 0, count: x.count)
        let dy = Tensor(y.shape)
        for i in 0..<dy.count { dy.data[i] = Float(i % 11) + 1 }
        for pl in 0..<(s.c * s.n) { for oh in 0..<ho { for ow in 0..<wo {
            let p = pl * s.plane
            let window = [2 * oh * s.w + 2 * ow, 2 * oh * s.w + 2 * ow + 1, (2 * oh + 1) * s.w + 2 * ow, (2 * oh + 1) * s.w + 2 * ow + 1]
            var at = window[0]
            for o in window.dropFirst() where x.data[p + o] > x.data[p + at] { at = o }
            XCTAssertEqual(y.data[pl * ho * wo + oh * wo + ow], x.data[p + at])
            expected[p + at] = dy.data[pl * ho * wo + oh * wo + ow]
        } } }
        let dx = pool.backward(dy, ctx)
        XCTAssertEqual(Array(UnsafeBufferPointer(start: dx.data, count: dx.count)), expected)
    }

    /// The general path (3×3, stride 2, padding 1: ResNet-50's stem pooling; odd sizes) against
    /// the rule on two workers: the max over the window inside the plane, the first of ties in
    /// row-major window order, backward adding each gradient to that input.
    func testMaxPoolGeneralPathMatchesTheRule() {
        let s = Shape(n: 2, c: 3, h: 7, w: 9)
        let x = Tensor(s)
        var rng = Xoshiro256(seed: 6)
        for i in 0..<x.count { x.data[i] = Float(rng.nextIndex(below: 3)) }   // many ties
        let pool = MaxPool2d(kernelSize: 3, stride: 2, padding: 1), ctx = Context()
        ctx.threads = 2
        let y = pool.forward(x, ctx)
        let (ho, wo) = (4, 5)
        XCTAssertEqual(y.shape, Shape(n: 2, c: 3, h: ho, w: wo))
        var expected = [Float](repeating: 0, count: x.count)
        let dy = Tensor(y.shape)
        for i in 0..<dy.count { dy.data[i] = Float(i % 7) + 1 }
        for pl in 0..<(s.c * s.n) { for oh in 0..<ho { for ow in 0..<wo {
            let p = pl * s.plane
            var at = -1
            for i in (2 * oh - 1)...(2 * oh + 1) where i >= 0 && i < s.h {
                for j in (2 * ow - 1)...(2 * ow + 1) where j >= 0 && j < s.w {
                    if at < 0 || x.data[p + i * s.w + j] > x.data[p + at] { at = i * s.w + j }
                }
            }
            XCTAssertEqual(y.data[pl * ho * wo + oh * wo + ow], x.data[p + at])
            expected[p + at] += dy.data[pl * ho * wo + oh * wo + ow]
        } } }
        let dx = pool.backward(dy, ctx)
        XCTAssertEqual(Array(UnsafeBufferPointer(start: dx.data, count: dx.count)), expected)
        XCTAssertThrowsError(try MaxPool2d(kernelSize: 2, stride: 1, padding: 2).outputShape(for: s))
    }

    func testReductionsMatchLoops() {
        var rng = Xoshiro256(seed: 8)
        for n in [0, 1, 15, 16, 17, 1000] {
            let a = (0..<n).map { _ in rng.nextFloat() }, b = (0..<n).map { _ in rng.nextFloat() }
            let s = a.reduce(0.0) { $0 + Double($1) }
            let d = zip(a, b).reduce(0.0) { $0 + Double($1.0) * Double($1.1) }
            let mean = Float(n > 0 ? s / Double(n) : 0)
            let ssd = a.reduce(0.0) { $0 + Double($1 - mean) * Double($1 - mean) }
            XCTAssertEqual(Double(sum(a, n)), s, accuracy: 1e-3)
            XCTAssertEqual(Double(dot(a, b, n)), d, accuracy: 1e-3)
            XCTAssertEqual(Double(sumSquaredDeviations(a, n, mean: mean)), ssd, accuracy: 1e-3)
            // One pass, the same partial sums: equal bit for bit.
            let both = sumAndDot(a, b, n)
            XCTAssertEqual(both.sum.bitPattern, sum(a, n).bitPattern)
            XCTAssertEqual(both.dot.bitPattern, dot(a, b, n).bitPattern)
            // Branch sums, plain and gated by a ReLU output (zeros and positives, and a negative).
            let gate: [Float] = (0..<n).map { (i: Int) -> Float in i % 3 == 0 ? 0 : (i % 7 == 0 ? -1 : Float(i)) }
            var plain = [Float](repeating: .nan, count: n), gated = [Float](repeating: .nan, count: n)
            sumGated(a, b, gate: nil, &plain, n)
            sumGated(a, b, gate: gate, &gated, n)
            let sums: [Float] = zip(a, b).map { $0 + $1 }
            let gatedSums: [Float] = (0..<n).map { (i: Int) -> Float in gate[i] > 0 ? sums[i] : 0 }
            XCTAssertEqual(plain, sums)
            XCTAssertEqual(gated, gatedSums)
        }
    }
}

final class WorkerParallelTests: XCTestCase {
    /// Runs forward + backward `steps` times (stale partials or scratch would show) on a fixed
    /// input; returns output, input gradient and parameter gradients of the last step.
    func convolutionResults(_ conv: Conv2d, _ store: ParameterStore, _ ctx: Context, input shape: Shape,
                            inputSeed: UInt64, gradientPeriod: Int, steps: Int) -> [Float] {
        let x = Tensor(shape)
        var rng = Xoshiro256(seed: inputSeed)
        for i in 0..<x.count { x.data[i] = rng.nextFloat() - 0.5 }
        var out: [Float] = []
        for _ in 0..<steps {
            store.zeroGradients()
            let y = conv.forward(x, ctx)
            let dy = Tensor(y.shape)
            for i in 0..<dy.count { dy.data[i] = Float(i % gradientPeriod) * 0.1 - 0.05 * Float(gradientPeriod - 1) }
            let dx = conv.backward(dy, ctx)
            out = Array(y.buffer) + Array(dx.buffer) + Array(store.gradients)
        }
        return out
    }

    /// Fails at the first entry where `b` differs from `a` by more than 1e-4 relative.
    func assertClose(_ a: [Float], _ b: [Float], _ what: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(a.count, b.count, file: file, line: line)
        for i in a.indices where abs(a[i] - b[i]) > 1e-4 * max(1, abs(a[i])) {
            return XCTFail("\(what): entry \(i) differs: \(a[i]) vs \(b[i])", file: file, line: line)
        }
    }

    /// Computes `results` with one BLAS thread (each worker's GEMMs run single-threaded) and
    /// asserts that every result equals the first (im2col + sgemm's).
    func assertRunsMatchFirst(_ what: String, file: StaticString = #filePath, line: UInt = #line,
                              _ results: () -> [[Float]]) {
        let savedThreads = BLAS.threads
        defer { BLAS.threads = savedThreads }
        BLAS.threads = 1
        let runs = results()
        for (k, r) in runs.enumerated().dropFirst() { assertClose(runs[0], r, "\(what) run \(k) vs gemm", file: file, line: line) }
    }

    /// Output, input gradient and weight gradient (`convolutionResults`) of a fresh 3×3 layer
    /// (`cin` → `cout`, bias, weights from `seed`) on `shape` with `algorithm` on `workers`
    /// (column budget `budget`); `check` sees the layer and its context first.
    private func convolutionRun(
        cin: Int, cout: Int, seed: UInt64, shape: Shape, _ algorithm: ConvolutionAlgorithm, workers: Int,
        budget: Int = 1 << 20, inputSeed: UInt64, gradientPeriod: Int, check: (Conv2d, Context) -> Void
    ) -> [Float] {
        let store = ParameterStore()
        let conv = Conv2d("c", store: store, inChannels: cin, outChannels: cout, kernelSize: 3, padding: 1, bias: true)
        store.allocate(seed: seed)
        let ctx = Context()
        ctx.threads = workers
        ctx.columnBudget = budget
        ctx.convolutionAlgorithm = algorithm
        check(conv, ctx)
        return convolutionResults(conv, store, ctx, input: shape, inputSeed: inputSeed, gradientPeriod: gradientPeriod, steps: 2)
    }

    /// The direct 3×3 kernel and im2col + sgemm give the same output, input gradient and weight
    /// gradient, on one and two workers and with chunks of one image.
    func testDirectConvolutionMatchesGemmPath() throws {
        try XCTSkipUnless(Conv3x3.isAvailable, "no AVX2/FMA on this CPU")
        let shape = Shape(n: 7, c: 8, h: 6, w: 16)
        assertRunsMatchFirst("direct") {
            [(ConvolutionAlgorithm.gemm, 1, 1 << 20), (.direct, 1, 1 << 20), (.direct, 2, 1), (.automatic, 2, 1 << 20)]
                .map { algorithm, workers, budget in
                    convolutionRun(cin: 8, cout: 12, seed: 4, shape: shape, algorithm, workers: workers, budget: budget,
                                   inputSeed: 9, gradientPeriod: 11) { conv, ctx in
                        XCTAssertEqual(conv.usesDirectKernel(shape, ctx), algorithm != .gemm)
                    }
                }
        }
    }

    /// The small-image kernels (AVX-512) and im2col + sgemm give the same results on 4×4 and
    /// 2×2 inputs, on one and two workers (`.direct`; at 2×2 `.automatic` takes the pixel product).
    func testSmallImageKernelsMatchGemmPath() throws {
        try XCTSkipUnless(Conv3x3.isSupported(.avx512), "no AVX-512 on this CPU: the small-image kernels are not run")
        for size in [4, 2] {
            let shape = Shape(n: 7, c: 16, h: size, w: size)
            assertRunsMatchFirst("size \(size)") {
                [(ConvolutionAlgorithm.gemm, 1), (.direct, 1), (.direct, 2)].map { algorithm, workers in
                    convolutionRun(cin: 16, cout: 24, seed: 5, shape: shape, algorithm, workers: workers, inputSeed: 3,
                                   gradientPeriod: 5) { conv, ctx in
                        XCTAssertEqual(conv.directKernel(shape, ctx), algorithm == .gemm ? nil : .smallImages)
                    }
                }
            }
        }
    }

    /// The pixel product (images of at most 2×2 as one GEMM over images) on one worker and split
    /// among two (its columns, and whole output channels of the weight gradient) equals im2col.
    func testPixelProductMatchesGemmPath() {
        let shape = Shape(n: 16, c: 32, h: 2, w: 2)
        assertRunsMatchFirst("pixel product") {
            [(ConvolutionAlgorithm.gemm, 1), (.automatic, 1), (.automatic, 2)].map { algorithm, workers in
                convolutionRun(cin: 32, cout: 48, seed: 6, shape: shape, algorithm, workers: workers, inputSeed: 4,
                               gradientPeriod: 3) { conv, ctx in
                    XCTAssertEqual(conv.usesPixelProduct(shape, ctx), algorithm == .automatic)
                }
            }
        }
    }

    /// Winograd (2×2 and 4×4 tiles) on one worker, on two, and with chunks of one image (transform budget 1), on
    /// odd sizes, equals im2col; `.automatic` takes it from 64 channels (not below, nor on
    /// images the pixel product takes, nor on images too large for the transform budget).
    func testWinogradMatchesGemmPath() {
        let shape = Shape(n: 5, c: 6, h: 7, w: 9)
        assertRunsMatchFirst("winograd") {
            [(ConvolutionAlgorithm.gemm, 1, 1 << 23), (.winograd, 1, 1 << 23), (.winograd, 2, 1 << 23), (.winograd, 2, 1),
             (.winograd4, 1, 1 << 23), (.winograd4, 2, 1)]
                .map { algorithm, workers, budget in
                    convolutionRun(cin: 6, cout: 10, seed: 7, shape: shape, algorithm, workers: workers, inputSeed: 5,
                                   gradientPeriod: 7) { conv, ctx in
                        ctx.transformBudget = budget
                        XCTAssertEqual(conv.usesWinograd(shape, ctx), algorithm != .gemm)
                    }
                }
        }
        let store = ParameterStore(), ctx = Context()
        let wide = Conv2d("w", store: store, inChannels: 128, outChannels: 256, kernelSize: 3, padding: 1)
        let narrow = Conv2d("n", store: store, inChannels: 32, outChannels: 256, kernelSize: 3, padding: 1)
        XCTAssertTrue(wide.usesWinograd(Shape(n: 2, c: 128, h: 8, w: 8), ctx))
        XCTAssertFalse(wide.usesWinograd(Shape(n: 2, c: 128, h: 2, w: 2), ctx))
        XCTAssertFalse(narrow.usesWinograd(Shape(n: 2, c: 32, h: 8, w: 8), ctx))
        // F(4×4) under the automatic choice; one 160×160 image's transforms (36·384·40² floats)
        // exceed the budget of 2²³, one 96×96 image's (36·384·24²) do not.
        XCTAssertEqual(wide.winograd(Shape(n: 2, c: 128, h: 96, w: 96), ctx), .f4x4)
        XCTAssertFalse(wide.usesWinograd(Shape(n: 2, c: 128, h: 160, w: 160), ctx))
    }

    /// A Winograd weight gradient over one image on two workers (one chunk: worker 1 idle) after
    /// one over several (both workers' sums written) adds only the sums of this pass.
    func testWinogradWeightGradientIgnoresIdleWorkers() {
        func weightGradient(_ algorithm: ConvolutionAlgorithm, workers: Int) -> [Float] {
            let store = ParameterStore()
            let conv = Conv2d("c", store: store, inChannels: 4, outChannels: 6, kernelSize: 3, padding: 1)
            store.allocate(seed: 9)
            let ctx = Context()
            ctx.threads = workers
            ctx.convolutionAlgorithm = algorithm
            var out: [Float] = []
            for n in [4, 1] {
                out = convolutionResults(conv, store, ctx, input: Shape(n: n, c: 4, h: 5, w: 6), inputSeed: 3,
                                         gradientPeriod: 5, steps: 1)
            }
            return out
        }
        assertRunsMatchFirst("winograd after a larger batch") {
            [weightGradient(.gemm, workers: 1), weightGradient(.winograd, workers: 2), weightGradient(.winograd4, workers: 2)]
        }
    }

    /// A pixel-product input gradient after a forward pass that ran another way (here im2col;
    /// in training a sparse pass) uses this step's weights, not W' from an earlier forward.
    func testPixelProductInputGradientAfterAnotherForwardUsesCurrentWeights() {
        let store = ParameterStore()
        let conv = Conv2d("c", store: store, inChannels: 6, outChannels: 5, kernelSize: 3, padding: 1)
        store.allocate(seed: 8)
        let shape = Shape(n: 4, c: 6, h: 2, w: 2)
        let x = Tensor(shape)
        var rng = Xoshiro256(seed: 9)
        for i in 0..<x.count { x.data[i] = rng.nextFloat() - 0.5 }
        let ctx = Context()
        func inputGradient(forward: ConvolutionAlgorithm, backward: ConvolutionAlgorithm) -> [Float] {
            ctx.convolutionAlgorithm = forward
            let y = conv.forward(x, ctx)
            ctx.convolutionAlgorithm = backward
            let dy = Tensor(y.shape)
            for i in 0..<dy.count { dy.data[i] = Float(i % 7) * 0.1 - 0.3 }
            let dx = conv.backward(dy, ctx)
            defer { ctx.release(dx) }
            return Array(dx.buffer)
        }
        _ = inputGradient(forward: .automatic, backward: .automatic)  // W' of the first weights
        let w = store.value(conv.weight)
        for i in 0..<conv.weight.count { w[i] *= -2 }
        XCTAssertTrue(conv.usesPixelProduct(shape, Context()))
        assertClose(inputGradient(forward: .gemm, backward: .gemm), inputGradient(forward: .gemm, backward: .automatic),
                    "pixel-product input gradient after an im2col forward")
    }

    /// Convolutions split the batch over workers that call single-threaded BLAS concurrently;
    /// the result must equal the one-worker result (up to summation order of the weight
    /// gradient partials).
    func testConvolutionOnTwoWorkersMatchesOneWorker() {
        let savedThreads = BLAS.threads
        defer { BLAS.threads = savedThreads }
        BLAS.threads = 1
        for (k, s, p, cin) in [(3, 1, 1, 4), (1, 1, 0, 8), (3, 2, 1, 5)] {
            var results: [[Float]] = []
            for workers in [1, 2] {
                let store = ParameterStore()
                let conv = Conv2d("c", store: store, inChannels: cin, outChannels: 6, kernelSize: k, stride: s, padding: p)
                store.allocate(seed: 21)
                let ctx = Context()
                ctx.threads = workers
                ctx.columnBudget = 1   // one image per chunk: many concurrent GEMMs
                results.append(convolutionResults(conv, store, ctx, input: Shape(n: 9, c: cin, h: 8, w: 7),
                                                  inputSeed: 5, gradientPeriod: 7, steps: 3))
            }
            assertClose(results[0], results[1], "k\(k) s\(s)")
        }
    }
}
