import Foundation

/// A grouped bar chart as a standalone SVG document: one group per category (layer), one bar per
/// series (method), values in [0, 1] on a linear axis.
public func barChartSVG(title: String, categories: [String], series: [(String, [Double])], yLabel: String) -> String {
    let colors = ["#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860", "#DA8BC3", "#8C8C8C"]
    let left = 60.0, right = 20.0, top = 40.0, bottom = 150.0
    let groupWidth = max(24.0, Double(series.count) * 6 + 6)
    let width = left + right + groupWidth * Double(categories.count)
    // Legend entries as wide as their labels, wrapped into rows under the plot.
    var legend: [(x: Double, row: Int)] = []
    var lx = left, row = 0
    for (label, _) in series {
        let w = 24 + 6.0 * Double(label.count)
        if lx + w > max(width, 480) - right && lx > left { lx = left; row += 1 }
        legend.append((lx, row))
        lx += w
    }
    let height = 420.0 + 14 * Double(row)
    let plotH = 420.0 - top - bottom
    var s = """
    <svg xmlns="http://www.w3.org/2000/svg" width="\(Int(max(width, 480)))" height="\(Int(height))" font-family="sans-serif" font-size="10">
    <rect width="100%" height="100%" fill="white"/>
    <text x="\(left)" y="20" font-size="14">\(escape(title))</text>

    """
    for tick in stride(from: 0.0, through: 1.0, by: 0.25) {
        let y = top + plotH * (1 - tick)
        s += "<line x1=\"\(left)\" y1=\"\(y)\" x2=\"\(width - right)\" y2=\"\(y)\" stroke=\"#ddd\"/>\n"
        s += "<text x=\"\(left - 6)\" y=\"\(y + 3)\" text-anchor=\"end\">\(tick)</text>\n"
    }
    s += "<text x=\"14\" y=\"\(top + plotH / 2)\" transform=\"rotate(-90 14 \(top + plotH / 2))\" text-anchor=\"middle\">\(escape(yLabel))</text>\n"
    let barW = (groupWidth - 6) / Double(max(series.count, 1))
    for (c, name) in categories.enumerated() {
        let x0 = left + Double(c) * groupWidth + 3
        for (k, (_, values)) in series.enumerated() {
            let v = max(0, min(1, values[c]))
            let h = plotH * v
            s += "<rect x=\(q(x0 + Double(k) * barW)) y=\(q(top + plotH - h)) width=\(q(barW)) height=\(q(h)) fill=\"\(colors[k % colors.count])\"/>\n"
        }
        let lx = x0 + groupWidth / 2
        s += "<text x=\(q(lx)) y=\(q(top + plotH + 8)) transform=\"rotate(60 \(lx) \(top + plotH + 8))\">\(escape(name))</text>\n"
    }
    for (k, (label, _)) in series.enumerated() {
        let (x, r) = legend[k]
        let y = 420.0 - 18 + 14 * Double(r)
        s += "<rect x=\(q(x)) y=\(q(y)) width=\"10\" height=\"10\" fill=\"\(colors[k % colors.count])\"/>"
        s += "<text x=\(q(x + 14)) y=\(q(y + 9))>\(escape(label))</text>\n"
    }
    return s + "</svg>\n"
}

private func q(_ v: Double) -> String { "\"\((v * 10).rounded() / 10)\"" }

func escape(_ text: String) -> String {
    text.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
        .replacingOccurrences(of: ">", with: "&gt;")
}

/// A line chart with a logarithmic y axis, as a standalone SVG document.
public func lineChartSVG(title: String, x: [Double], y: [Double], xLabel: String, yLabel: String) -> String {
    let width = 640.0, height = 400.0, left = 70.0, right = 20.0, top = 40.0, bottom = 50.0
    let plotW = width - left - right, plotH = height - top - bottom
    let x0 = x.min() ?? 0, x1 = x.max() ?? 1
    let ly = y.map { log10(max($0, 1e-12)) }
    let y0 = (ly.min() ?? 0).rounded(.down), y1 = (ly.max() ?? 1).rounded(.up)
    func px(_ v: Double) -> Double { left + plotW * (v - x0) / max(x1 - x0, 1e-12) }
    func py(_ v: Double) -> Double { top + plotH * (1 - (v - y0) / max(y1 - y0, 1e-12)) }
    var s = """
    <svg xmlns="http://www.w3.org/2000/svg" width="\(Int(width))" height="\(Int(height))" font-family="sans-serif" font-size="11">
    <rect width="100%" height="100%" fill="white"/>
    <text x="\(left)" y="22" font-size="14">\(title)</text>

    """
    var e = y0
    while e <= y1 {
        let yy = py(e)
        s += "<line x1=\"\(left)\" y1=\"\(yy)\" x2=\"\(width - right)\" y2=\"\(yy)\" stroke=\"#ddd\"/>"
        s += "<text x=\"\(left - 6)\" y=\"\(yy + 4)\" text-anchor=\"end\">1e\(Int(e))</text>\n"
        e += 1
    }
    for t in stride(from: x0, through: x1 + 1e-9, by: (x1 - x0) / 5) {
        s += "<text x=\"\(px(t))\" y=\"\(height - bottom + 16)\" text-anchor=\"middle\">\(String(format: "%.2f", t))</text>\n"
    }
    let points = zip(x, ly).map { "\(String(format: "%.1f", px($0))),\(String(format: "%.1f", py($1)))" }.joined(separator: " ")
    s += "<polyline points=\"\(points)\" fill=\"none\" stroke=\"#4C72B0\" stroke-width=\"2\"/>\n"
    s += "<text x=\"\(left + plotW / 2)\" y=\"\(height - 12)\" text-anchor=\"middle\">\(xLabel)</text>\n"
    s += "<text x=\"16\" y=\"\(top + plotH / 2)\" transform=\"rotate(-90 16 \(top + plotH / 2))\" text-anchor=\"middle\">\(yLabel)</text>\n"
    return s + "</svg>\n"
}
