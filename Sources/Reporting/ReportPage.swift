import Foundation

/// Lines of (x, y) points, one per series, as a standalone SVG document. With `logX` the x axis
/// is logarithmic (x > 0); `xTick` formats axis labels.
public func seriesChartSVG(title: String, series: [(String, [(Double, Double)])], xLabel: String, yLabel: String,
                           logX: Bool = false, xTick: (Double) -> String = { String(format: "%g", $0) }) -> String {
    let colors = ["#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860", "#DA8BC3", "#8C8C8C"]
    let width = 640.0, height = 400.0, left = 60.0, right = 170.0, top = 40.0, bottom = 50.0
    let points = series.flatMap(\.1).filter { !logX || $0.0 > 0 }
    func fx(_ x: Double) -> Double { logX ? log10(x) : x }
    let xs = points.map { fx($0.0) }, ys = points.map(\.1)
    let x0 = xs.min() ?? 0, x1 = max(xs.max() ?? 1, x0 + 1e-9)
    let y0 = min(ys.min() ?? 0, 0), y1 = max(ys.max() ?? 1, y0 + 1e-9)
    func px(_ x: Double) -> Double { left + (width - left - right) * (fx(x) - x0) / (x1 - x0) }
    func py(_ y: Double) -> Double { top + (height - top - bottom) * (1 - (y - y0) / (y1 - y0)) }
    var s = """
    <svg xmlns="http://www.w3.org/2000/svg" width="\(Int(width))" height="\(Int(height))" font-family="sans-serif" font-size="11">
    <rect width="100%" height="100%" fill="white"/>
    <text x="\(left)" y="22" font-size="14">\(escape(title))</text>

    """
    for k in 0...4 {
        let y = y0 + (y1 - y0) * Double(k) / 4
        s += "<line x1=\"\(left)\" y1=\"\(r(py(y)))\" x2=\"\(width - right)\" y2=\"\(r(py(y)))\" stroke=\"#ddd\"/>"
        s += "<text x=\"\(left - 6)\" y=\"\(r(py(y) + 4))\" text-anchor=\"end\">\(String(format: "%.3g", y))</text>\n"
    }
    // Every distinct x as a tick when they are few, else six evenly spaced ones.
    let distinct = Set(points.map(\.0)).sorted()
    let ticks = distinct.count <= 12 ? distinct : (0...5).map { k -> Double in
        let v = x0 + (x1 - x0) * Double(k) / 5
        return logX ? pow(10, v) : v
    }
    for x in ticks {
        s += "<text x=\"\(r(px(x)))\" y=\"\(height - bottom + 16)\" text-anchor=\"middle\">\(escape(xTick(x)))</text>\n"
    }
    s += "<text x=\"\(r((left + width - right) / 2))\" y=\"\(height - 12)\" text-anchor=\"middle\">\(escape(xLabel))</text>\n"
    s += "<text x=\"16\" y=\"\(r((top + height - bottom) / 2))\" transform=\"rotate(-90 16 \(r((top + height - bottom) / 2)))\" text-anchor=\"middle\">\(escape(yLabel))</text>\n"
    for (k, (name, pts)) in series.enumerated() {
        let color = colors[k % colors.count]
        let drawn = pts.filter { !logX || $0.0 > 0 }.sorted { $0.0 < $1.0 }
        if drawn.count > 1 {
            s += "<polyline fill=\"none\" stroke=\"\(color)\" stroke-width=\"2\" points=\"" + drawn.map { "\(r(px($0.0))),\(r(py($0.1)))" }.joined(separator: " ") + "\"/>\n"
        }
        for (x, y) in drawn { s += "<circle cx=\"\(r(px(x)))\" cy=\"\(r(py(y)))\" r=\"3\" fill=\"\(color)\"/>\n" }
        let ly = top + 14 * Double(k)
        s += "<rect x=\"\(width - right + 10)\" y=\"\(r(ly))\" width=\"10\" height=\"10\" fill=\"\(color)\"/>"
        s += "<text x=\"\(width - right + 24)\" y=\"\(r(ly + 9))\">\(escape(name))</text>\n"
    }
    return s + "</svg>\n"
}

private func r(_ v: Double) -> Double { (v * 10).rounded() / 10 }

/// The report as one self-contained XHTML page: the table (from `groups`), the claims checked and the SVG figures.
public func reportPage(title: String, groups: [RunGroup], paper: PaperTable?, figures: [(String, String)], claims: [ClaimCheck] = []) -> String {
    let (header, rows) = reportCells(groups, paper: paper)
    var html = """
    <!DOCTYPE html>
    <html xmlns="http://www.w3.org/1999/xhtml"><head><meta charset="utf-8"/><title>\(escape(title))</title>
    <style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}td:first-child{text-align:left}</style>
    </head><body><h1>\(escape(title))</h1>
    <table><tr>\(header.map { "<th>\(escape($0))</th>" }.joined())</tr>

    """
    for row in rows { html += "<tr>" + row.map { "<td>\(escape($0))</td>" }.joined() + "</tr>\n" }
    html += "</table>\n"
    if !claims.isEmpty {
        html += "<h2>The paper's claims on these runs</h2>\n<ul>\n"
        for c in claims { html += "<li><b>\(escape(c.verdict.rawValue))</b>: \(escape(c.claim)) — \(escape(c.evidence))</li>\n" }
        html += "</ul>\n"
    }
    for (caption, svg) in figures {
        html += "<h2>\(escape(caption))</h2>\n" + svg.replacingOccurrences(of: "<svg xmlns=\"http://www.w3.org/2000/svg\"", with: "<svg xmlns=\"http://www.w3.org/2000/svg\" role=\"img\"")
    }
    return html + "</body></html>\n"
}
