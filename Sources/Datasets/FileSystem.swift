import Foundation

/// Creates `path` and its parents; on failure says why in one line ("… is a file, not a
/// directory", "permission denied in …") instead of a Foundation error dump.
public func createDirectory(_ path: String) throws {
    let fm = FileManager.default
    do {
        try fm.createDirectory(atPath: path, withIntermediateDirectories: true)
    } catch {
        var existing = path
        while !existing.isEmpty, existing != "/", !fm.fileExists(atPath: existing) {
            existing = (existing as NSString).deletingLastPathComponent
        }
        var isDirectory: ObjCBool = false
        let reason: String
        if !existing.isEmpty, fm.fileExists(atPath: existing, isDirectory: &isDirectory), !isDirectory.boolValue {
            reason = "\(existing) is a file, not a directory"
        } else if !existing.isEmpty, !fm.isWritableFile(atPath: existing) {
            reason = "permission denied in \(existing)"
        } else {
            reason = (error as NSError).localizedFailureReason ?? error.localizedDescription
        }
        throw DatasetError("cannot create directory \(path): \(reason)")
    }
}
