import Foundation
import Tensor

/// Fixed-size images packed into binary shards, read without JPEG decoding: what
/// `sparsetrain prepare-data` writes once so that a cluster job does not decode ImageNet every
/// epoch.
///
/// Directory layout:
/// - `index.json`: `{"format": "sparsetrain-packed-1", "size": S, "count": N,
///   "classes": [...], "shards": [{"file": "shard-00000.bin", "count": n, "checksum": "…"}]}`
/// - `labels.bin`: N little-endian Int32 labels;
/// - `shard-NNNNN.bin`: n images of S×S×3 bytes (rows, interleaved RGB), memory-mapped.
public final class PackedDataset: ImageDataset, @unchecked Sendable {
    public struct Index: Codable, Sendable {
        public struct Shard: Codable, Sendable {
            public var file: String
            public var count: Int
            /// checksum64 of the shard's bytes, hexadecimal.
            public var checksum: String
        }
        public var format: String
        public var size: Int
        public var count: Int
        public var classes: [String]
        public var shards: [Shard]
    }

    public static let format = "sparsetrain-packed-1"
    public let index: Index
    public let labels: [Int32]
    private let shards: [Data]
    private let shardStart: [Int]

    public init(directory: String) throws {
        let indexPath = directory + "/index.json"
        guard let data = FileManager.default.contents(atPath: indexPath) else {
            throw DatasetError("\(indexPath): missing (not a prepared dataset directory)")
        }
        guard let idx = try? JSONDecoder().decode(Index.self, from: data), idx.format == Self.format else {
            throw DatasetError("\(indexPath): not a \(Self.format) index")
        }
        let labelPath = directory + "/labels.bin"
        guard let labelData = FileManager.default.contents(atPath: labelPath), labelData.count == idx.count * 4 else {
            throw DatasetError("\(labelPath): missing or not \(idx.count) labels")
        }
        labels = labelData.withUnsafeBytes { raw in (0..<idx.count).map { Int32(littleEndian: raw.loadUnaligned(fromByteOffset: $0 * 4, as: Int32.self)) } }
        var maps: [Data] = []
        var starts: [Int] = []
        var total = 0
        let imageBytes = idx.size * idx.size * 3
        for s in idx.shards {
            let path = directory + "/" + s.file
            guard let m = try? Data(contentsOf: URL(fileURLWithPath: path), options: .alwaysMapped),
                  m.count == s.count * imageBytes else {
                throw DatasetError("\(path): missing or not \(s.count) images of \(idx.size)×\(idx.size)")
            }
            maps.append(m)
            starts.append(total)
            total += s.count
        }
        guard total == idx.count else { throw DatasetError("\(indexPath): shards hold \(total) images, index says \(idx.count)") }
        guard labels.allSatisfy({ $0 >= 0 && Int($0) < idx.classes.count }) else {
            throw DatasetError("\(labelPath): a label is outside the \(idx.classes.count) classes")
        }
        index = idx
        shards = maps
        shardStart = starts
    }

    public var count: Int { index.count }
    public var classNames: [String] { index.classes }
    public func label(at i: Int) -> Int { Int(labels[i]) }

    public func image(at i: Int) throws -> RGBImage {
        var s = shardStart.count - 1
        while shardStart[s] > i { s -= 1 }
        let n = index.size * index.size * 3
        let offset = (i - shardStart[s]) * n
        let pixels = shards[s].withUnsafeBytes { Array(UnsafeRawBufferPointer(rebasing: $0[offset..<(offset + n)])) }
        return RGBImage(width: index.size, height: index.size, pixels: pixels)
    }

    /// Recomputes every shard's checksum and compares it with the index.
    public func verify() throws {
        for (k, s) in index.shards.enumerated() {
            let sum = shards[k].withUnsafeBytes { checksum64($0) }
            guard String(sum, radix: 16) == s.checksum else { throw DatasetError("\(s.file): checksum mismatch (damaged shard)") }
        }
    }
}

/// Writes an image dataset as a packed directory: each image resized (shorter side to `size`)
/// and centre-cropped to `size × size`.
///
/// Writes into a temporary sibling directory and renames it into place only after verifying
/// counts and checksums, so an interrupted run leaves nothing under `output`. An existing
/// `output` is replaced only with `overwrite`.
public func prepareDataset(
    _ source: ImageDataset, size: Int, output: String, overwrite: Bool, imagesPerShard: Int = 10_000,
    threads: Int = 1, skipBad: Bool = false, progress: ((Int, Int) -> Void)? = nil
) throws -> (written: Int, skipped: Int) {
    let fm = FileManager.default
    guard size > 0 else { throw DatasetError("size must be positive") }
    if let folder = source as? ImageFolder, let clash = pathsOverlap(folder.root, output) {
        throw DatasetError("the output \(output) \(clash) the source \(folder.root); choose a directory outside it")
    }
    if fm.fileExists(atPath: output) && !overwrite {
        throw DatasetError("\(output) already exists (pass --overwrite to replace it)")
    }
    let temp = output + ".partial-\(ProcessInfo.processInfo.processIdentifier)"
    try? fm.removeItem(atPath: temp)
    try createDirectory(temp)
    var succeeded = false
    defer { if !succeeded { try? fm.removeItem(atPath: temp) } }

    let transform = ImageTransform(size: size, augmentation: .resizeCenterCrop(resize: size), normalization: .none)
    let n = size * size * 3
    var shards: [PackedDataset.Index.Shard] = []
    var labels: [Int32] = []
    var skipped = 0
    var start = 0
    while start < source.count {
        let end = min(start + imagesPerShard, source.count)
        var bytes = [UInt8](repeating: 0, count: (end - start) * n)
        var ok = [Bool](repeating: true, count: end - start)
        let failure = ErrorBox()
        let first = start
        bytes.withUnsafeMutableBufferPointer { buf in
            ok.withUnsafeMutableBufferPointer { okBuf in
                let out = SendablePointer(buf.baseAddress!), okP = SendablePointer(okBuf.baseAddress!)
                parallelChunks(end - first, chunks: threads) { range in
                    var planes = [Float](repeating: 0, count: n)
                    var rng = Xoshiro256(seed: 0)
                    for k in range where !failure.isSet {
                        do {
                            let img = try source.image(at: first + k)
                            try planes.withUnsafeMutableBufferPointer { try transform.apply(img, rng: &rng, into: $0.baseAddress!) }
                            let dst = out.pointer + k * n
                            for c in 0..<3 {
                                for p in 0..<(size * size) {
                                    dst[p * 3 + c] = UInt8(max(0, min(255, (planes[c * size * size + p] * 255).rounded())))
                                }
                            }
                        } catch let e as DatasetError {
                            if skipBad { okP.pointer[k] = false } else { failure.set(e.naming(first + k, of: source)) }
                        } catch {
                            if skipBad { okP.pointer[k] = false } else { failure.set(error) }
                        }
                    }
                }
            }
        }
        if let error = failure.error { throw error }
        var kept: [UInt8] = []
        kept.reserveCapacity(bytes.count)
        for k in 0..<(end - start) {
            if ok[k] {
                kept += bytes[(k * n)..<((k + 1) * n)]
                labels.append(Int32(source.label(at: start + k)))
            } else {
                skipped += 1
            }
        }
        let file = String(format: "shard-%05d.bin", shards.count)
        let sum = kept.withUnsafeBytes { checksum64($0) }
        try Data(kept).write(to: URL(fileURLWithPath: temp + "/" + file))
        shards.append(.init(file: file, count: kept.count / n, checksum: String(sum, radix: 16)))
        start = end
        progress?(start, source.count)
    }
    guard !labels.isEmpty else {
        throw DatasetError("no image of \(source.count) could be decoded; nothing written")
    }
    var labelBytes = Data(capacity: labels.count * 4)
    for l in labels { withUnsafeBytes(of: l.littleEndian) { labelBytes.append(contentsOf: $0) } }
    try labelBytes.write(to: URL(fileURLWithPath: temp + "/labels.bin"))
    let index = PackedDataset.Index(format: PackedDataset.format, size: size, count: labels.count,
                                    classes: source.classNames, shards: shards)
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
    try encoder.encode(index).write(to: URL(fileURLWithPath: temp + "/index.json"))
    // Verify what was written before it takes the final name.
    let check = try PackedDataset(directory: temp)
    try check.verify()
    guard check.count == labels.count else { throw DatasetError("verification read \(check.count) images, wrote \(labels.count)") }
    if fm.fileExists(atPath: output) { try fm.removeItem(atPath: output) }
    try fm.moveItem(atPath: temp, toPath: output)
    succeeded = true
    return (labels.count, skipped)
}

/// How `output` overlaps `source` after resolving `.`, `..` and symbolic links: "is", "is
/// inside" or "contains"; nil when they are apart.
func pathsOverlap(_ source: String, _ output: String) -> String? {
    func canonical(_ p: String) -> String {
        URL(fileURLWithPath: p).standardizedFileURL.resolvingSymlinksInPath().path
    }
    let s = canonical(source), o = canonical(output)
    if s == o { return "is" }
    if o.hasPrefix(s.hasSuffix("/") ? s : s + "/") { return "is inside" }
    if s.hasPrefix(o.hasSuffix("/") ? o : o + "/") { return "contains" }
    return nil
}
