import Foundation
import NN
@testable import Sparsity

/// Synflow's R and ∂R/∂θ computed independently, in Double, with no rescaling: the network's
/// layers re-implemented naively on `|θ|·mask`, one all-ones image, batch norm in evaluation mode
/// with statistics (0, 1). Covers the layers of the CIFAR ResNets, VGG and the MLP.
struct DoubleSynflow {
    let store: ParameterStore
    private(set) var gradient: [Double]
    private let weight: [Double]
    private var inputs: [ObjectIdentifier: Activation] = [:]
    private var outputs: [ObjectIdentifier: Activation] = [:]
    private(set) var logR = 0.0

    struct Activation { var c: Int, h: Int, w: Int, v: [Double] }

    init(_ net: Network) throws {
        store = net.store
        weight = (0..<net.store.count).map { Double(abs(net.store.values[$0]) * net.store.mask[$0]) }
        gradient = [Double](repeating: 0, count: net.store.count)
        let x = Activation(c: net.inputChannels, h: net.inputHeight, w: net.inputWidth,
                           v: [Double](repeating: 1, count: net.imageSize))
        let y = try forward(net.body, x)
        logR = log(y.v.reduce(0, +))
        _ = try backward(net.body, Activation(c: y.c, h: y.h, w: y.w, v: [Double](repeating: 1, count: y.v.count)))
    }

    /// `log |θ ∂R/∂θ|` of each weight of `layer`.
    func logScores(of layer: MaskableLayer) -> [Double] {
        (layer.offset..<(layer.offset + layer.count)).map { i in
            let s = weight[i] * gradient[i]
            return s > 0 ? log(s) : -.infinity
        }
    }

    struct Unsupported: Error { let layer: String }

    private mutating func forward(_ layer: Layer, _ x: Activation) throws -> Activation {
        inputs[ObjectIdentifier(layer)] = x
        var y = x
        switch layer {
        case let seq as Sequential:
            for l in seq.layers { y = try forward(l, y) }
        case let conv as Conv2d:
            let k = conv.kernelSize, s = conv.stride, p = conv.padding
            y = Activation(c: conv.outChannels, h: (x.h + 2 * p - k) / s + 1, w: (x.w + 2 * p - k) / s + 1, v: [])
            y.v = [Double](repeating: 0, count: y.c * y.h * y.w)
            for o in 0..<y.c { for i in 0..<x.c { for kh in 0..<k { for kw in 0..<k {
                let wv = weight[conv.weight.offset + ((o * x.c + i) * k + kh) * k + kw]
                for oh in 0..<y.h { for ow in 0..<y.w {
                    let ih = oh * s - p + kh, iw = ow * s - p + kw
                    if ih >= 0, ih < x.h, iw >= 0, iw < x.w { y.v[(o * y.h + oh) * y.w + ow] += wv * x.v[(i * x.h + ih) * x.w + iw] }
                } }
            } } } }
            if let b = conv.bias { for o in 0..<y.c { for j in 0..<(y.h * y.w) { y.v[o * y.h * y.w + j] += weight[b.offset + o] } } }
        case let bn as BatchNorm:
            let plane = x.h * x.w
            for c in 0..<x.c {
                let g = bn.weight.map { weight[$0.offset + c] } ?? 1
                let b = bn.bias.map { weight[$0.offset + c] } ?? 0
                for j in 0..<plane { y.v[c * plane + j] = x.v[c * plane + j] * g / (1 + Double(bn.eps)).squareRoot() + b }
            }
        case is ReLU:
            y.v = x.v.map { max(0, $0) }
        case let block as ResidualBlock:
            let m = try forward(block.main, x)
            let r = try block.shortcut.map { try forward($0, x) } ?? x
            y = Activation(c: m.c, h: m.h, w: m.w, v: zip(m.v, r.v).map { max(0, $0 + $1) })
        case let pad as ZeroPadShortcut:
            let s = pad.stride, off = (pad.outChannels - x.c) / 2
            y = Activation(c: pad.outChannels, h: (x.h + s - 1) / s, w: (x.w + s - 1) / s, v: [])
            y.v = [Double](repeating: 0, count: y.c * y.h * y.w)
            for c in 0..<x.c { for h in 0..<y.h { for w in 0..<y.w {
                y.v[((c + off) * y.h + h) * y.w + w] = x.v[(c * x.h + h * s) * x.w + w * s]
            } } }
        case let pool as AvgPool2d where pool.kernelSize == 0:
            let plane = Double(x.h * x.w)
            var v = [Double](repeating: 0, count: x.c)
            for c in 0..<x.c { v[c] = x.v[(c * x.h * x.w)..<((c + 1) * x.h * x.w)].reduce(0, +) / plane }
            y = Activation(c: x.c, h: 1, w: 1, v: v)
        case is Flatten:
            y = Activation(c: x.c * x.h * x.w, h: 1, w: 1, v: x.v)
        case let fc as Linear:
            var v = [Double](repeating: 0, count: fc.outFeatures)
            for o in 0..<fc.outFeatures {
                var sum: Double = fc.bias.map { weight[$0.offset + o] } ?? 0
                for i in 0..<fc.inFeatures { sum += weight[fc.weight.offset + o * fc.inFeatures + i] * x.v[i] }
                v[o] = sum
            }
            y = Activation(c: fc.outFeatures, h: 1, w: 1, v: v)
        default:
            throw Unsupported(layer: "\(type(of: layer))")
        }
        outputs[ObjectIdentifier(layer)] = y
        return y
    }

    /// dR/d(input) from dR/d(output); weight gradients accumulate in `gradient`.
    private mutating func backward(_ layer: Layer, _ dy: Activation) throws -> Activation {
        let x = inputs[ObjectIdentifier(layer)]!, y = outputs[ObjectIdentifier(layer)]!
        var dx = Activation(c: x.c, h: x.h, w: x.w, v: [Double](repeating: 0, count: x.v.count))
        switch layer {
        case let seq as Sequential:
            var g = dy
            for l in seq.layers.reversed() { g = try backward(l, g) }
            dx = g
        case let conv as Conv2d:
            let k = conv.kernelSize, s = conv.stride, p = conv.padding
            for o in 0..<y.c { for i in 0..<x.c { for kh in 0..<k { for kw in 0..<k {
                let wi = conv.weight.offset + ((o * x.c + i) * k + kh) * k + kw
                for oh in 0..<y.h { for ow in 0..<y.w {
                    let ih = oh * s - p + kh, iw = ow * s - p + kw
                    guard ih >= 0, ih < x.h, iw >= 0, iw < x.w else { continue }
                    let d = dy.v[(o * y.h + oh) * y.w + ow], xi = (i * x.h + ih) * x.w + iw
                    gradient[wi] += d * x.v[xi]
                    dx.v[xi] += d * weight[wi]
                } }
            } } } }
        case let bn as BatchNorm:
            let plane = x.h * x.w
            for c in 0..<x.c {
                let g = bn.weight.map { weight[$0.offset + c] } ?? 1
                for j in 0..<plane { dx.v[c * plane + j] = dy.v[c * plane + j] * g / (1 + Double(bn.eps)).squareRoot() }
            }
        case is ReLU:
            dx.v = zip(dy.v, x.v).map { $1 > 0 ? $0 : 0 }
        case let block as ResidualBlock:
            let g = Activation(c: dy.c, h: dy.h, w: dy.w, v: zip(dy.v, y.v).map { $1 > 0 ? $0 : 0 })
            let dm = try backward(block.main, g)
            let ds = try block.shortcut.map { try backward($0, g) } ?? g
            dx.v = zip(dm.v, ds.v).map { $0 + $1 }
        case let pad as ZeroPadShortcut:
            let s = pad.stride, off = (pad.outChannels - x.c) / 2
            for c in 0..<x.c { for h in 0..<y.h { for w in 0..<y.w {
                dx.v[(c * x.h + h * s) * x.w + w * s] = dy.v[((c + off) * y.h + h) * y.w + w]
            } } }
        case is AvgPool2d:
            let plane = x.h * x.w
            for c in 0..<x.c { for j in 0..<plane { dx.v[c * plane + j] = dy.v[c] / Double(plane) } }
        case is Flatten:
            dx.v = dy.v
        case let fc as Linear:
            for o in 0..<fc.outFeatures { for i in 0..<fc.inFeatures {
                let wi = fc.weight.offset + o * fc.inFeatures + i
                gradient[wi] += dy.v[o] * x.v[i]
                dx.v[i] += dy.v[o] * weight[wi]
            } }
        default:
            throw Unsupported(layer: "\(type(of: layer))")
        }
        return dx
    }
}
