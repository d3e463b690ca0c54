import Foundation
import Tensor

/// Per-channel normalisation `(x/255 − mean) / std` applied after augmentation.
public struct Normalization: Sendable, Equatable {
    public var mean: [Float]
    public var std: [Float]
    public init(mean: [Float], std: [Float]) { self.mean = mean; self.std = std }

    public static let cifar10 = Normalization(mean: [0.4914, 0.4822, 0.4465], std: [0.2470, 0.2435, 0.2616])
    public static let imageNet = Normalization(mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225])
    public static let none = Normalization(mean: [0, 0, 0], std: [1, 1, 1])
}

/// How an image becomes a training or evaluation input of `size × size`.
public enum Augmentation: Sendable, Equatable {
    /// The image as it is (it must already be `size × size`).
    case none
    /// Zero-pad by `padding`, take a random `size × size` crop, flip horizontally with
    /// probability ½ (CIFAR: size 32, padding 4; Tiny ImageNet: 64, 4).
    case padCrop(padding: Int, flip: Bool)
    /// RandomResizedCrop: a random box of `scale` × the area and aspect ratio in `ratio`
    /// (log-uniform), resized to `size`, flipped with probability ½. Falls back to a centre
    /// crop after 10 tries, as torchvision does.
    case randomResizedCrop(scale: ClosedRange<Double>, ratio: ClosedRange<Double>)
    /// Resize the shorter side to `resize`, take the centre `size × size` (ImageNet evaluation).
    case resizeCenterCrop(resize: Int)

    public static let imageNetTrain = Augmentation.randomResizedCrop(scale: 0.08...1, ratio: (3.0 / 4)...(4.0 / 3))
    public static let imageNetEval = Augmentation.resizeCenterCrop(resize: 256)
}

/// Augmentation plus normalisation producing float (3, size, size) planes.
public struct ImageTransform: Sendable {
    public var size: Int
    public var augmentation: Augmentation
    public var normalization: Normalization

    public init(size: Int, augmentation: Augmentation, normalization: Normalization) {
        self.size = size
        self.augmentation = augmentation
        self.normalization = normalization
    }

    /// Floats one output image takes.
    public var outputCount: Int { 3 * size * size }

    /// Writes the transformed image into `out` (3 × size × size, channel planes).
    public func apply(_ image: RGBImage, rng: inout Xoshiro256, into out: UnsafeMutablePointer<Float>) throws {
        let s = size
        switch augmentation {
        case .none:
            guard image.width == s, image.height == s else {
                throw DatasetError("image is \(image.width)×\(image.height), expected \(s)×\(s) (no resizing configured)")
            }
            shifted(image, dx: 0, dy: 0, flip: false, into: out)
        case .padCrop(let padding, let flip):
            guard image.width == s, image.height == s else {
                throw DatasetError("image is \(image.width)×\(image.height), pad-and-crop needs \(s)×\(s)")
            }
            let dx = rng.nextIndex(below: 2 * padding + 1) - padding
            let dy = rng.nextIndex(below: 2 * padding + 1) - padding
            shifted(image, dx: dx, dy: dy, flip: flip && rng.nextFloat() < 0.5, into: out)
        case .randomResizedCrop(let scale, let ratio):
            let box = randomBox(image, scale: scale, ratio: ratio, rng: &rng)
            resample(image, box: box, flip: rng.nextFloat() < 0.5, into: out)
        case .resizeCenterCrop(let resize):
            // The centre crop of the resized image maps back to a box of side short·size/resize.
            let short = Double(min(image.width, image.height))
            let side = short * Double(s) / Double(resize)
            let box = ((Double(image.width) - side) / 2, (Double(image.height) - side) / 2, side, side)
            resample(image, box: box, flip: false, into: out)
        }
    }

    /// Integer shift (crop offset relative to the unpadded image), zero outside, optional flip.
    private func shifted(_ image: RGBImage, dx: Int, dy: Int, flip: Bool, into out: UnsafeMutablePointer<Float>) {
        let s = size, w = image.width, h = image.height
        let scale = normalization.std.map { 1 / (255 * $0) }
        let shift = zip(normalization.mean, normalization.std).map { -$0 / $1 }
        image.pixels.withUnsafeBufferPointer { px in
            for c in 0..<3 {
                let plane = out + c * s * s
                for y in 0..<s {
                    let sy = y + dy
                    for x in 0..<s {
                        let sx = (flip ? s - 1 - x : x) + dx
                        let v: Float = (sy >= 0 && sy < h && sx >= 0 && sx < w) ? Float(px[(sy * w + sx) * 3 + c]) : 0
                        plane[y * s + x] = v * scale[c] + shift[c]
                    }
                }
            }
        }
    }

    /// A torchvision-style RandomResizedCrop box (x, y, width, height) in source pixels.
    private func randomBox(_ image: RGBImage, scale: ClosedRange<Double>, ratio: ClosedRange<Double>,
                           rng: inout Xoshiro256) -> (Double, Double, Double, Double) {
        let w = Double(image.width), h = Double(image.height), area = w * h
        let logLo = Foundation.log(ratio.lowerBound), logHi = Foundation.log(ratio.upperBound)
        for _ in 0..<10 {
            let target = area * (scale.lowerBound + rng.nextDouble() * (scale.upperBound - scale.lowerBound))
            let aspect = exp(logLo + rng.nextDouble() * (logHi - logLo))
            let bw = (target * aspect).squareRoot().rounded(), bh = (target / aspect).squareRoot().rounded()
            if bw > 0 && bh > 0 && bw <= w && bh <= h {
                let x = Double(rng.nextIndex(below: Int(w - bw) + 1)), y = Double(rng.nextIndex(below: Int(h - bh) + 1))
                return (x, y, bw, bh)
            }
        }
        let side = min(w, h)
        return ((w - side) / 2, (h - side) / 2, side, side)
    }

    /// Bilinear resampling of `box` to size × size (pixel centres aligned, edges clamped).
    private func resample(_ image: RGBImage, box: (Double, Double, Double, Double), flip: Bool,
                          into out: UnsafeMutablePointer<Float>) {
        let s = size, w = image.width, h = image.height
        let (bx, by, bw, bh) = box
        let scale = normalization.std.map { 1 / (255 * $0) }
        let shift = zip(normalization.mean, normalization.std).map { -$0 / $1 }
        image.pixels.withUnsafeBufferPointer { px in
            for y in 0..<s {
                let fy = min(max(by + (Double(y) + 0.5) * bh / Double(s) - 0.5, 0), Double(h - 1))
                let y0 = Int(fy), y1 = min(y0 + 1, h - 1)
                let ty = Float(fy - Double(y0))
                for x in 0..<s {
                    let xx = flip ? s - 1 - x : x
                    let fx = min(max(bx + (Double(xx) + 0.5) * bw / Double(s) - 0.5, 0), Double(w - 1))
                    let x0 = Int(fx), x1 = min(x0 + 1, w - 1)
                    let tx = Float(fx - Double(x0))
                    for c in 0..<3 {
                        let a = Float(px[(y0 * w + x0) * 3 + c]), b = Float(px[(y0 * w + x1) * 3 + c])
                        let d = Float(px[(y1 * w + x0) * 3 + c]), e = Float(px[(y1 * w + x1) * 3 + c])
                        let v = (a * (1 - tx) + b * tx) * (1 - ty) + (d * (1 - tx) + e * tx) * ty
                        out[c * s * s + y * s + x] = v * scale[c] + shift[c]
                    }
                }
            }
        }
    }
}
