import Tensor

/// A deterministic, learnable image classification task made from a seed: each class has a
/// smooth random prototype (a sum of low-frequency waves per channel); an image is its class's
/// prototype, randomly shifted by up to 2 pixels, plus pixel noise. A small CNN separates the
/// classes well above chance within an epoch or two; nothing is read from disk.
public final class SyntheticDataset: ImageDataset, @unchecked Sendable {
    public let count: Int
    public let width: Int
    public let height: Int
    public let classNames: [String]
    public let seed: UInt64
    /// Sample i is the generator's sample `firstSample + i`: a test split uses the same classes
    /// (prototypes) with different samples.
    public let firstSample: Int
    /// Pixel noise (standard deviation in 0…255 units).
    public let noise: Float
    private let prototypes: [[Float]]   // per class (H, W, 3) in 0…255

    public init(count: Int, classes: Int = 10, width: Int = 32, height: Int = 32, seed: UInt64 = 0, noise: Float = 40,
                firstSample: Int = 0) {
        precondition(count > 0 && classes >= 2 && width > 0 && height > 0)
        self.count = count
        self.firstSample = firstSample
        self.width = width
        self.height = height
        self.seed = seed
        self.noise = noise
        classNames = (0..<classes).map { "class\($0)" }
        var rng = Xoshiro256(seed: seed ^ 0x5A5A)
        prototypes = (0..<classes).map { _ in
            var waves: [(Float, Float, Float, Float)] = []   // (fx, fy, phase, amplitude) per channel × 3
            for _ in 0..<9 {
                waves.append((rng.nextFloat() * 3, rng.nextFloat() * 3, rng.nextFloat() * 6.283, 20 + rng.nextFloat() * 40))
            }
            var img = [Float](repeating: 0, count: width * height * 3)
            for y in 0..<height {
                for x in 0..<width {
                    for c in 0..<3 {
                        var v: Float = 128
                        for k in 0..<3 {
                            let (fx, fy, ph, a) = waves[c * 3 + k]
                            v += a * sinf(6.283 * (fx * Float(x) / Float(width) + fy * Float(y) / Float(height)) + ph)
                        }
                        img[(y * width + x) * 3 + c] = v
                    }
                }
            }
            return img
        }
    }

    public func label(at index: Int) -> Int {
        var rng = Xoshiro256(seed: seed &+ UInt64(index + firstSample) &* 0x9E37_79B9_7F4A_7C15)
        return rng.nextIndex(below: classNames.count)
    }

    public func image(at index: Int) throws -> RGBImage {
        var rng = Xoshiro256(seed: seed &+ UInt64(index + firstSample) &* 0x9E37_79B9_7F4A_7C15)
        let proto = prototypes[rng.nextIndex(below: classNames.count)]
        let dx = rng.nextIndex(below: 5) - 2, dy = rng.nextIndex(below: 5) - 2
        var pixels = [UInt8](repeating: 0, count: width * height * 3)
        for y in 0..<height {
            let sy = min(max(y + dy, 0), height - 1)
            for x in 0..<width {
                let sx = min(max(x + dx, 0), width - 1)
                for c in 0..<3 {
                    let u = rng.nextFloat() + rng.nextFloat() + rng.nextFloat() - 1.5   // ≈ N(0, 0.25)
                    let v = proto[(sy * width + sx) * 3 + c] + noise * 2 * u
                    pixels[(y * width + x) * 3 + c] = UInt8(max(0, min(255, v.rounded())))
                }
            }
        }
        return RGBImage(width: width, height: height, pixels: pixels)
    }
}

#if canImport(Glibc)
import Glibc
#endif
