using System.Globalization;
using ScottPlot;

namespace SpecEdge.Bench.Matrix;

/// <summary>PNG plots of a matrix run (ScottPlot).</summary>
internal static class MatrixPlots
{
    public static void Write(string directory, IReadOnlyList<CellResult> cells)
    {
        var ok = cells.Where(c => c.Status == "ok" && !double.IsNaN(c.RoundTripMs) && c.BandwidthBitsPerSecond == 0 && c.JitterFraction == 0).ToList();
        if (ok.Count == 0)
        {
            return;
        }

        LinesAgainstRoundTrip(Path.Combine(directory, "ms_per_token.png"), ok, c => c.MsPerToken, "ms per committed token", "ms per token against link round trip");
        LinesAgainstRoundTrip(Path.Combine(directory, "speedup.png"), ok, c => c.SpeedupVsCloud, "speed-up over cloud autoregressive", "speed-up over cloud autoregressive decoding");
        Breakdown(Path.Combine(directory, "breakdown.png"), ok);
    }

    private static void LinesAgainstRoundTrip(string path, List<CellResult> cells, Func<CellResult, double> value, string yLabel, string title)
    {
        var plot = new Plot();
        var palette = new ScottPlot.Palettes.Category10();
        var index = 0;
        foreach (var series in cells.GroupBy(c => Series(c)).OrderBy(g => g.Key, StringComparer.Ordinal))
        {
            var points = series.OrderBy(c => c.RoundTripMs).ToList();
            var scatter = plot.Add.Scatter(points.Select(c => c.RoundTripMs).ToArray(), points.Select(value).ToArray());
            scatter.LegendText = series.Key;
            scatter.Color = palette.GetColor(index++);
            scatter.LineWidth = 2;
            scatter.MarkerSize = 6;
        }

        plot.XLabel("link round trip (ms)");
        plot.YLabel(yLabel);
        plot.Title(title);
        plot.ShowLegend(Alignment.UpperLeft);
        plot.SavePng(path, 1000, 600);
    }

    private static void Breakdown(string path, List<CellResult> cells)
    {
        var plot = new Plot();
        var parts = new[] { "draft", "uplink", "queue", "stages", "downlink", "idle" };
        var colors = new ScottPlot.Palettes.Category10();
        var groups = cells.Where(c => c.Mode != "edge" && (c.Gamma is "-" or "4")).GroupBy(c => c.RoundTripMs).OrderBy(g => g.Key).ToList();
        var position = 0.0;
        var ticks = new List<Tick>();
        foreach (var group in groups)
        {
            foreach (var cell in group.OrderBy(c => c.Mode, StringComparer.Ordinal))
            {
                var b = cell.PerRoundMs;
                double[] values = [b.Draft, b.Uplink, b.Queue, b.Stages.Sum(), b.Downlink, b.Idle];
                var bottom = 0.0;
                for (var i = 0; i < values.Length; i++)
                {
                    var bar = plot.Add.Bar(new Bar { Position = position, ValueBase = bottom, Value = bottom + values[i], FillColor = colors.GetColor(i) });
                    _ = bar;
                    bottom += values[i];
                }

                ticks.Add(new Tick(position, $"{Short(cell.Mode)}\n{cell.RoundTripMs.ToString(CultureInfo.InvariantCulture)}ms"));
                position += 1;
            }

            position += 0.7;
        }

        for (var i = 0; i < parts.Length; i++)
        {
            plot.Legend.ManualItems.Add(new LegendItem { LabelText = parts[i], FillColor = colors.GetColor(i) });
        }

        plot.Axes.Bottom.TickGenerator = new ScottPlot.TickGenerators.NumericManual([.. ticks]);
        plot.YLabel("ms per round (mean)");
        plot.Title("where a round's time goes (γ = 4; cloud: per token)");
        plot.ShowLegend(Alignment.UpperLeft);
        plot.Axes.Margins(bottom: 0);
        plot.SavePng(path, Math.Max(1000, (int)(position * 45)), 650);
    }

    private static string Series(CellResult c) => c.Mode is "cloud" or "edge" ? c.Mode : $"{c.Mode} γ={c.Gamma}";

    private static string Short(string mode) => mode switch
    {
        "speculative" => "spec",
        "preemptive" => "pre",
        "conditional" => "cond",
        "proactive" => "pro",
        _ => mode,
    };
}
