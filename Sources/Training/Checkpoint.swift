import Foundation
import Tensor

/// Checkpoints in the safetensors format: an 8-byte little-endian header length, a JSON header
/// `{"name": {"dtype": "F32", "shape": [...], "data_offsets": [begin, end]}, …,
/// "__metadata__": {"key": "value", …}}`, then the raw little-endian tensor bytes. Python's
/// `safetensors` and numpy read it directly.
public struct Checkpoint {
    public var tensors: [(name: String, shape: [Int], values: [Float])] = []
    public var metadata: [String: String] = [:]

    public init() {}

    public func tensor(_ name: String) -> [Float]? { tensors.first { $0.name == name }?.values }

    /// Density of every saved mask, by layer name (`mask/<name>` tensors): the per-layer ratios
    /// of a pruned run, e.g. for ER-IMP.
    public func maskDensities() -> [String: Double] {
        var out: [String: Double] = [:]
        for t in tensors where t.name.hasPrefix("mask/") {
            let active = t.values.reduce(0) { $0 + ($1 != 0 ? 1 : 0) }
            out[String(t.name.dropFirst(5))] = Double(active) / Double(max(1, t.values.count))
        }
        return out
    }

    /// The file's bytes.
    public func encoded() throws -> Data {
        var body = Data()
        for t in tensors { t.values.withUnsafeBytes { body.append(contentsOf: $0) } }   // x86-64: little-endian
        var meta = metadata
        meta[Self.checksumKey] = String(body.withUnsafeBytes { checksum64($0) }, radix: 16)
        var header: [String: Any] = ["__metadata__": meta]
        var offset = 0
        for t in tensors {
            precondition(t.shape.reduce(1, *) == t.values.count, "shape of \(t.name) does not match its values")
            header[t.name] = ["dtype": "F32", "shape": t.shape, "data_offsets": [offset, offset + 4 * t.values.count]]
            offset += 4 * t.values.count
        }
        var json = try JSONSerialization.data(withJSONObject: header, options: [.sortedKeys])
        // Pad the header with spaces to a multiple of 8 so the data is aligned.
        while json.count % 8 != 0 { json.append(0x20) }
        var out = Data(capacity: 8 + json.count + offset)
        withUnsafeBytes(of: UInt64(json.count).littleEndian) { out.append(contentsOf: $0) }
        out.append(json)
        out.append(body)
        return out
    }

    /// Metadata key of the checksum of the tensor bytes, checked on every read.
    public static let checksumKey = "data_checksum"

    /// Writes atomically: a temporary file in the same directory, fsync, rename. A crash at any
    /// point leaves either the old file or the new one under `path`, never a partial one. With
    /// `previous`, the file `path` held is first renamed to it (so the last two are kept; between
    /// the two renames only `previous` and the temporary file exist).
    public func write(to path: String, keepingPreviousAt previous: String? = nil) throws {
        let data = try encoded()
        let dir = (path as NSString).deletingLastPathComponent
        let temp = (dir.isEmpty ? "." : dir) + "/.\((path as NSString).lastPathComponent).tmp-\(getpid())"
        guard FileManager.default.createFile(atPath: temp, contents: nil) else {
            throw ConfigError("cannot create \(temp)")
        }
        do {
            let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: temp))
            try handle.write(contentsOf: data)
            try handle.synchronize()
            try handle.close()
            if let previous, FileManager.default.fileExists(atPath: path) {
                guard rename(path, previous) == 0 else { throw ConfigError("cannot rename \(path) to \(previous)") }
            }
            guard rename(temp, path) == 0 else { throw ConfigError("cannot rename \(temp) to \(path)") }
        } catch {
            unlink(temp)
            throw error
        }
    }

    /// Reads and checks a checkpoint; a truncated or corrupt file gives an error naming it.
    public static func read(from path: String) throws -> Checkpoint {
        guard let data = FileManager.default.contents(atPath: path) else { throw ConfigError("\(path): cannot read checkpoint") }
        return try decode(data, path: path)
    }

    /// The metadata of a checkpoint, reading only its header (nil when the file is missing or its
    /// header is not a safetensors header).
    public static func readMetadata(from path: String) -> [String: String]? {
        guard let file = FileHandle(forReadingAtPath: path) else { return nil }
        defer { try? file.close() }
        guard let prefix = try? file.read(upToCount: 8), prefix.count == 8 else { return nil }
        let length = prefix.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self)) }
        guard length > 0, length < 1 << 30, let header = try? file.read(upToCount: Int(length)), header.count == Int(length),
              let json = try? JSONSerialization.jsonObject(with: header) as? [String: Any] else { return nil }
        return json["__metadata__"] as? [String: String] ?? [:]
    }

    /// Parses a checkpoint's bytes; `path` names it in errors.
    public static func decode(_ data: Data, path: String) throws -> Checkpoint {
        func bad(_ why: String) -> ConfigError { ConfigError("\(path): not a valid checkpoint (\(why))") }
        guard data.count >= 8 else { throw bad("shorter than its header") }
        let rawLength = data.prefix(8).withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self)) }
        guard rawLength > 0, rawLength <= UInt64(data.count - 8) else { throw bad("header length \(rawLength) exceeds the file") }
        let headerLength = Int(rawLength)
        guard let header = try? JSONSerialization.jsonObject(with: data.subdata(in: 8..<(8 + headerLength))) as? [String: Any] else {
            throw bad("header is not JSON")
        }
        var ck = Checkpoint()
        ck.metadata = header["__metadata__"] as? [String: String] ?? [:]
        let body = 8 + headerLength
        var entries: [(String, [Int], Int, Int)] = []
        for (name, value) in header where name != "__metadata__" {
            guard let info = value as? [String: Any], info["dtype"] as? String == "F32",
                  let shape = info["shape"] as? [Int], let offsets = info["data_offsets"] as? [Int], offsets.count == 2
            else { throw bad("entry \(name) is not an F32 tensor") }
            guard shape.allSatisfy({ $0 >= 0 }), let count = Self.elementCount(shape), count <= Int.max / 4 else {
                throw bad("tensor \(name) has an impossible shape \(shape)")
            }
            guard offsets[0] >= 0, offsets[1] >= offsets[0], offsets[1] <= data.count - body, count <= (data.count - body) / 4 else {
                throw bad("tensor \(name) runs past the end of the file (truncated?)")
            }
            guard offsets[1] - offsets[0] == 4 * count else { throw bad("tensor \(name) has \(offsets[1] - offsets[0]) bytes for shape \(shape)") }
            entries.append((name, shape, offsets[0], offsets[1]))
        }
        if let expected = ck.metadata[Self.checksumKey] {
            let dataEnd = entries.map(\.3).max() ?? 0
            let sum = data.subdata(in: body..<(body + dataEnd)).withUnsafeBytes { checksum64($0) }
            guard String(sum, radix: 16) == expected else { throw bad("its data fails the checksum: the file is damaged") }
        }
        ck.metadata[Self.checksumKey] = nil
        for (name, shape, begin, end) in entries.sorted(by: { $0.2 < $1.2 }) {
            let values = data.subdata(in: (body + begin)..<(body + end)).withUnsafeBytes { raw in
                (0..<((end - begin) / 4)).map { Float(bitPattern: UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: $0 * 4, as: UInt32.self))) }
            }
            ck.tensors.append((name, shape, values))
        }
        return ck
    }

    /// Product of `shape`, nil on overflow.
    static func elementCount(_ shape: [Int]) -> Int? {
        var n = 1
        for d in shape {
            let (p, overflow) = n.multipliedReportingOverflow(by: d)
            if overflow { return nil }
            n = p
        }
        return n
    }
}
