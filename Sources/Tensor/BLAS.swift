import COpenBLAS

/// Process-wide OpenBLAS settings and facts.
public enum BLAS {
    /// Threads OpenBLAS uses for one call.
    public static var threads: Int {
        get { Int(openblas_get_num_threads()) }
        set { openblas_set_num_threads(Int32(max(1, newValue))) }
    }

    /// Runs `body` with OpenBLAS on `count` threads, then restores the setting.
    @inline(__always)
    public static func withThreads<T>(_ count: Int, _ body: () -> T) -> T {
        let saved = threads
        if saved != count { threads = count }
        defer { if saved != count { threads = saved } }
        return body()
    }

    /// Name of the kernel family OpenBLAS picked for this CPU (e.g. "SkylakeX", "Haswell").
    public static var coreName: String {
        guard let p = openblas_get_corename() else { return "unknown" }
        return String(cString: p)
    }

    /// OpenBLAS build configuration string.
    public static var config: String {
        guard let p = openblas_get_config() else { return "unknown" }
        return String(cString: p)
    }
}
