import XCTest
import Tensor

/// The direct 3×3 kernels, every variant this CPU runs, against naive loops accumulated in Double.
final class DirectConvolutionTests: XCTestCase {
    struct Case { var cin, cout, count, h, w: Int }
    /// Widths 8, 16, 24 and 32; output channels that only the 4-block variant takes; more than 64
    /// input channels (a second pass that accumulates); pixel-vector counts that leave 1 or 2
    /// vectors in the last group; more images than one weight-gradient pass takes (17 of 16×16).
    let cases = [Case(cin: 3, cout: 8, count: 2, h: 3, w: 8), Case(cin: 8, cout: 4, count: 3, h: 5, w: 16),
                 Case(cin: 4, cout: 12, count: 1, h: 1, w: 24), Case(cin: 5, cout: 4, count: 4, h: 8, w: 8),
                 Case(cin: 16, cout: 8, count: 2, h: 5, w: 32), Case(cin: 72, cout: 16, count: 1, h: 2, w: 16),
                 Case(cin: 8, cout: 24, count: 3, h: 7, w: 16), Case(cin: 16, cout: 8, count: 1, h: 4, w: 48),
                 Case(cin: 8, cout: 8, count: 17, h: 16, w: 16)]

    /// The variants this CPU runs; the test output names them.
    var variants: [KernelISA] {
        let v = [KernelISA.avx2, .avx512].filter(Conv3x3.isSupported)
        print("direct 3x3 convolution variants tested on this CPU: " + v.map(\.description).joined(separator: ", ")
              + (Conv3x3.isSupported(.avx512) ? "" : " (no AVX-512 here: that variant is not run)"))
        return v
    }

    func random(_ count: Int, _ rng: inout Xoshiro256) -> [Float] {
        (0..<count).map { _ in rng.nextFloat() * 2 - 1 }
    }

    /// x at channel c, image n, row h, column w with zero padding (channel-major layout).
    func at(_ x: [Float], _ c: Case, channels: Int, _ ch: Int, _ n: Int, _ h: Int, _ w: Int) -> Double {
        guard h >= 0, h < c.h, w >= 0, w < c.w else { return 0 }
        return Double(x[((ch * c.count + n) * c.h + h) * c.w + w])
    }

    func padded(_ x: [Float], channels: Int, _ c: Case) -> [Float] {
        var xpad = [Float](repeating: .nan, count: Conv3x3.paddedCount(channels: channels, count: c.count, height: c.h, width: c.w))
        Conv3x3.pad(x, channelStride: c.count * c.h * c.w, channels: channels, count: c.count, height: c.h, width: c.w, into: &xpad)
        return xpad
    }

    func close(_ a: [Float], _ b: [Double], _ what: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(a.count, b.count, file: file, line: line)
        for i in b.indices where abs(Double(a[i]) - b[i]) > 1e-4 * max(1, abs(b[i])) {
            return XCTFail("\(what) entry \(i): \(a[i]) vs \(b[i])", file: file, line: line)
        }
    }

    /// Output, input gradient and weight gradient by naive loops in Double.
    func naive(_ c: Case, x: [Float], w: [Float], dy: [Float]) -> (y: [Double], dx: [Double], dw: [Double]) {
        let plane = c.h * c.w, cols = c.count * plane
        var expectedY = [Double](repeating: 0, count: c.cout * cols)
        var expectedDx = [Double](repeating: 0, count: c.cin * cols)
        var expectedDw = [Double](repeating: 0, count: w.count)
        for o in 0..<c.cout { for n in 0..<c.count { for h in 0..<c.h { for wc in 0..<c.w {
            let yi = (o * c.count + n) * plane + h * c.w + wc
            for i in 0..<c.cin { for kh in 0..<3 { for kw in 0..<3 {
                let wv = Double(w[((o * c.cin + i) * 3 + kh) * 3 + kw])
                let xv = at(x, c, channels: c.cin, i, n, h + kh - 1, wc + kw - 1)
                expectedY[yi] += wv * xv
                expectedDw[((o * c.cin + i) * 3 + kh) * 3 + kw] += Double(dy[yi]) * xv
                let ih = h + kh - 1, iw = wc + kw - 1
                if ih >= 0, ih < c.h, iw >= 0, iw < c.w {
                    expectedDx[(i * c.count + n) * plane + ih * c.w + iw] += wv * Double(dy[yi])
                }
            } } }
        } } } }
        return (expectedY, expectedDx, expectedDw)
    }

    func testForwardInputGradientAndWeightGradientMatchNaiveLoops() throws {
        try XCTSkipUnless(Conv3x3.isAvailable, "no AVX2/FMA on this CPU")
        let variants = self.variants
        for (t, c) in cases.enumerated() {
            var rng = Xoshiro256(seed: UInt64(t + 1))
            let plane = c.h * c.w, cols = c.count * plane
            let x = random(c.cin * cols, &rng), w = random(c.cout * c.cin * 9, &rng), dy = random(c.cout * cols, &rng)
            let (expectedY, expectedDx, expectedDw) = naive(c, x: x, w: w, dy: dy)

            for isa in variants where Conv3x3.applies(isa, outChannels: c.cout, width: c.w) {
                let tag = "case \(t) \(isa)"
                var packed = [Float](repeating: 0, count: w.count)
                Conv3x3.packWeights(w, outChannels: c.cout, inChannels: c.cin, flipped: false, isa: isa, into: &packed)
                var y = [Float](repeating: .nan, count: c.cout * cols)
                Conv3x3.forward(padded(x, channels: c.cin, c), inChannels: c.cin, count: c.count, height: c.h,
                                width: c.w, packed: packed, outChannels: c.cout, y: &y, yChannelStride: cols, isa: isa)
                close(y, expectedY, tag + " forward")

                // Accumulates: start from ones.
                var dw = [Float](repeating: 1, count: w.count)
                Conv3x3.weightGradient(padded(x, channels: c.cin, c), inChannels: c.cin, count: c.count, height: c.h,
                                       width: c.w, dy: dy, dyChannelStride: cols, outChannels: c.cout, dw: &dw, isa: isa)
                close(dw, expectedDw.map { $0 + 1 }, tag + " weight gradient")

                guard Conv3x3.applies(isa, outChannels: c.cin, width: c.w) else { continue }
                Conv3x3.packWeights(w, outChannels: c.cout, inChannels: c.cin, flipped: true, isa: isa, into: &packed)
                var dx = [Float](repeating: .nan, count: c.cin * cols)
                Conv3x3.forward(padded(dy, channels: c.cout, c), inChannels: c.cout, count: c.count, height: c.h,
                                width: c.w, packed: packed, outChannels: c.cin, y: &dx, yChannelStride: cols, isa: isa)
                close(dx, expectedDx, tag + " input gradient")
            }
        }
    }

    /// The small-image kernels (AVX-512; H·W divides 16) read the input unpadded: 4×4, 2×2, 2×4
    /// and 1×2 images, batches whose last vector is partly empty, more than one block of output
    /// channels.
    func testSmallImageKernelsMatchNaiveLoops() throws {
        try XCTSkipUnless(Conv3x3.isSupported(.avx512), "no AVX-512 on this CPU: the small-image kernels are not run")
        print("small-image 3x3 convolution kernels tested on this CPU (AVX-512F)")
        let cases = [Case(cin: 8, cout: 16, count: 3, h: 4, w: 4), Case(cin: 16, cout: 8, count: 5, h: 2, w: 2),
                     Case(cin: 8, cout: 8, count: 7, h: 2, w: 4), Case(cin: 24, cout: 16, count: 9, h: 1, w: 2),
                     Case(cin: 3, cout: 8, count: 4, h: 4, w: 4)]
        for (t, c) in cases.enumerated() {
            var rng = Xoshiro256(seed: UInt64(t + 20))
            let cols = c.count * c.h * c.w
            let x = random(c.cin * cols, &rng), w = random(c.cout * c.cin * 9, &rng), dy = random(c.cout * cols, &rng)
            let (expectedY, expectedDx, expectedDw) = naive(c, x: x, w: w, dy: dy)
            XCTAssertTrue(Conv3x3.smallImagesApply(outChannels: c.cout, height: c.h, width: c.w))
            var packed = [Float](repeating: 0, count: w.count)
            Conv3x3.packWeights(w, outChannels: c.cout, inChannels: c.cin, flipped: false, isa: .avx512, into: &packed)
            var y = [Float](repeating: .nan, count: c.cout * cols)
            Conv3x3.smallForward(x, xChannelStride: cols, inChannels: c.cin, count: c.count, height: c.h, width: c.w,
                                 packed: packed, outChannels: c.cout, y: &y, yChannelStride: cols)
            close(y, expectedY, "small case \(t) forward")
            var dw = [Float](repeating: 1, count: w.count)
            Conv3x3.smallWeightGradient(x, xChannelStride: cols, inChannels: c.cin, count: c.count, height: c.h,
                                        width: c.w, dy: dy, dyChannelStride: cols, outChannels: c.cout, dw: &dw)
            close(dw, expectedDw.map { $0 + 1 }, "small case \(t) weight gradient")
            guard c.cin % 8 == 0 else { continue }
            Conv3x3.packWeights(w, outChannels: c.cout, inChannels: c.cin, flipped: true, isa: .avx512, into: &packed)
            var dx = [Float](repeating: .nan, count: c.cin * cols)
            Conv3x3.smallForward(dy, xChannelStride: cols, inChannels: c.cout, count: c.count, height: c.h, width: c.w,
                                 packed: packed, outChannels: c.cin, y: &dx, yChannelStride: cols)
            close(dx, expectedDx, "small case \(t) input gradient")
        }
        XCTAssertFalse(Conv3x3.smallImagesApply(outChannels: 8, height: 8, width: 8))
        XCTAssertFalse(Conv3x3.smallImagesApply(outChannels: 8, height: 3, width: 3))
        XCTAssertFalse(Conv3x3.smallImagesApply(outChannels: 12, height: 4, width: 4))
        XCTAssertFalse(Conv3x3.smallImagesApply(outChannels: 8, height: 4, width: 4, widest: .avx2))
    }

    /// Winograd F(2×2, 3×3) and F(4×4, 3×3) (portable C + sgemm, every CPU): sizes that leave
    /// the last row or column of tiles partly outside the image, 1×1 and 1×N images, widths
    /// whose input transform goes by rows (≥ 2·M tiles) and by windows, a channel stride larger
    /// than the batch's planes (a chunk of a larger batch), accumulation into dw.
    func testWinogradMatchesNaiveLoops() {
        let cases = [Case(cin: 3, cout: 5, count: 2, h: 4, w: 4), Case(cin: 4, cout: 6, count: 3, h: 5, w: 7),
                     Case(cin: 7, cout: 3, count: 1, h: 1, w: 1), Case(cin: 2, cout: 4, count: 2, h: 1, w: 6),
                     Case(cin: 6, cout: 2, count: 2, h: 9, w: 2), Case(cin: 16, cout: 8, count: 3, h: 8, w: 8),
                     Case(cin: 5, cout: 7, count: 2, h: 10, w: 6), Case(cin: 8, cout: 8, count: 2, h: 7, w: 7),
                     Case(cin: 3, cout: 4, count: 2, h: 6, w: 33)]
        for variant in [Winograd.f2x2, .f4x4] {
            for (t, c) in cases.enumerated() {
                let tag = "winograd \(variant.tile)x\(variant.tile) case \(t)"
                var rng = Xoshiro256(seed: UInt64(t + 40))
                let plane = c.h * c.w, cols = c.count * plane
                let x = random(c.cin * cols, &rng), w = random(c.cout * c.cin * 9, &rng), dy = random(c.cout * cols, &rng)
                let (expectedY, expectedDx, expectedDw) = naive(c, x: x, w: w, dy: dy)
                var scratch = [Float](repeating: .nan, count: variant.scratchCount(
                    inChannels: c.cin, outChannels: c.cout, count: c.count, height: c.h, width: c.w))
                var u = [Float](repeating: .nan, count: variant.weightCount(outChannels: c.cout, inChannels: c.cin))

                variant.transformWeights(w, outChannels: c.cout, inChannels: c.cin, flipped: false, into: &u)
                var y = [Float](repeating: .nan, count: c.cout * cols)
                // The second image alone, reading and writing at the batch's channel strides.
                if c.count > 1 {
                    x.withUnsafeBufferPointer { xp in y.withUnsafeMutableBufferPointer { yp in
                        variant.forward(xp.baseAddress! + plane, xChannelStride: cols, inChannels: c.cin, count: 1,
                                        height: c.h, width: c.w, transformedWeights: u, outChannels: c.cout,
                                        y: yp.baseAddress! + plane, yChannelStride: cols, scratch: &scratch)
                    } }
                    for o in 0..<c.cout {
                        close(Array(y[(o * cols + plane)..<(o * cols + 2 * plane)]),
                              Array(expectedY[(o * cols + plane)..<(o * cols + 2 * plane)]), tag + " one image")
                    }
                }
                variant.forward(x, xChannelStride: cols, inChannels: c.cin, count: c.count, height: c.h, width: c.w,
                                transformedWeights: u, outChannels: c.cout, y: &y, yChannelStride: cols, scratch: &scratch)
                close(y, expectedY, tag + " forward")

                variant.transformWeights(w, outChannels: c.cout, inChannels: c.cin, flipped: true, into: &u)
                var dx = [Float](repeating: .nan, count: c.cin * cols)
                variant.forward(dy, xChannelStride: cols, inChannels: c.cout, count: c.count, height: c.h, width: c.w,
                                transformedWeights: u, outChannels: c.cin, y: &dx, yChannelStride: cols, scratch: &scratch)
                close(dx, expectedDx, tag + " input gradient")

                var z = [Float](repeating: 0, count: variant.weightCount(outChannels: c.cout, inChannels: c.cin))
                variant.accumulateWeightGradient(x, xChannelStride: cols, inChannels: c.cin, count: c.count, height: c.h,
                                                 width: c.w, dy: dy, dyChannelStride: cols, outChannels: c.cout, z: &z,
                                                 scratch: &scratch)
                var dw = [Float](repeating: 1, count: w.count)
                variant.finishWeightGradient(z, outChannels: c.cout, inChannels: c.cin, into: &dw)
                close(dw, expectedDw.map { $0 + 1 }, tag + " weight gradient")
            }
        }
    }

    /// Rounding at realistic channel counts (128 → 128 at 8×8, each output a sum of 1152
    /// products), as the largest error over the outputs' RMS against Double: F(2×2) 3.4e-6 and
    /// F(4×4) 1.5e-5 at 256 channels when measured (a float loop over the taps: 7.2e-6); the
    /// bounds leave room for other GEMM blockings, not for a transform that cancels badly.
    func testWinogradRoundingStaysNearFloatAccumulation() {
        let c = Case(cin: 128, cout: 128, count: 2, h: 8, w: 8), cols = c.count * c.h * c.w
        var rng = Xoshiro256(seed: 77)
        let x = random(c.cin * cols, &rng), w = random(c.cout * c.cin * 9, &rng).map { $0 * 0.05 }
        let expected = naive(c, x: x, w: w, dy: [Float](repeating: 0, count: c.cout * cols)).y
        let rms = (expected.map { $0 * $0 }.reduce(0, +) / Double(expected.count)).squareRoot()
        for (variant, bound) in [(Winograd.f2x2, 2e-5), (.f4x4, 6e-5)] {
            var u = [Float](repeating: 0, count: variant.weightCount(outChannels: c.cout, inChannels: c.cin))
            variant.transformWeights(w, outChannels: c.cout, inChannels: c.cin, flipped: false, into: &u)
            var scratch = [Float](repeating: 0, count: variant.scratchCount(
                inChannels: c.cin, outChannels: c.cout, count: c.count, height: c.h, width: c.w))
            var y = [Float](repeating: 0, count: c.cout * cols)
            variant.forward(x, xChannelStride: cols, inChannels: c.cin, count: c.count, height: c.h, width: c.w,
                            transformedWeights: u, outChannels: c.cout, y: &y, yChannelStride: cols, scratch: &scratch)
            let error = zip(y, expected).map { abs(Double($0) - $1) }.max()! / rms
            print("winograd \(variant.tile)x\(variant.tile) at 128 channels: largest error / RMS \(error)")
            XCTAssertLessThan(error, bound, "winograd \(variant.tile)x\(variant.tile)")
        }
    }

    func testPaddingSurroundsEachPlaneWithZeros() {
        let c = Case(cin: 2, cout: 4, count: 2, h: 2, w: 3)
        let x = (0..<(2 * 2 * 6)).map { Float($0 + 1) }
        let xpad = padded(x, channels: 2, c)
        XCTAssertEqual(xpad.count, 2 * 2 * 4 * 5)
        // Channel 1, image 0 is the third plane: values 13…18 inside a zero frame.
        let third = Array(xpad[40..<60])
        XCTAssertEqual(third, [0, 0, 0, 0, 0,  0, 13, 14, 15, 0,  0, 16, 17, 18, 0,  0, 0, 0, 0, 0])
    }

    func testSupportRules() {
        guard Conv3x3.isAvailable else { return XCTAssertFalse(Conv3x3.supports(outChannels: 16, width: 32)) }
        XCTAssertTrue(Conv3x3.supports(outChannels: 16, width: 32))
        XCTAssertFalse(Conv3x3.supports(outChannels: 6, width: 32))
        XCTAssertFalse(Conv3x3.supports(outChannels: 16, width: 14))
        XCTAssertNil(Conv3x3.variant(outChannels: 16, width: 32, widest: .portable))
        XCTAssertEqual(Conv3x3.variant(outChannels: 16, width: 32, widest: .avx2), .avx2)
        // 12 channels are not a whole block of the AVX-512 variant: the AVX2 one takes them.
        XCTAssertEqual(Conv3x3.variant(outChannels: 12, width: 32, widest: .avx512), .avx2)
        // Width 8 is not a whole vector of the AVX-512 variant.
        XCTAssertEqual(Conv3x3.variant(outChannels: 16, width: 8, widest: .avx512), .avx2)
        XCTAssertEqual(Conv3x3.variant(outChannels: 16, width: 32, widest: .avx512),
                       Conv3x3.isSupported(.avx512) ? .avx512 : .avx2)
    }
}
