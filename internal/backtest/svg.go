package backtest

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"

	splitterv1 "splitter.dev/splitter/api/v1alpha1"
)

// The chart's layout, in viewBox units. Both panels share the x axis; the
// band between them holds the decision labels and the column on the right
// the legends.
const (
	svgWidth, svgHeight = 960.0, 540.0
	svgPlotL, svgPlotR  = 64.0, 740.0
	svgLegendX          = 756.0
	svgTopY0, svgTopY1  = 66.0, 186.0
	svgBotY0, svgBotY1  = 262.0, 478.0
	svgLabelY0          = 199.0
	svgLabelRowH        = 12.0
	svgLabelRows        = 5
	svgLabelSize        = 10.0
	svgLegendRowH       = 14.0
	// svgPool is how many trailing points a rate pools over.
	svgPool = 5
	// svgMaxGreyLabels: with more decisions than this in the window only
	// the rollbacks, promotions and the deciding one are labelled.
	svgMaxGreyLabels = 12
)

const (
	svgBlue      = "#1f77b4"
	svgGreen     = "#2ca02c"
	svgRed       = "#d62728"
	svgDarkGreen = "#1b5e20"
	svgGrey      = "#9e9e9e"
	svgRecorded  = "#555555"
	svgGrid      = "#e6e6e6"
	svgInk       = "#333333"
)

// svgDashes tell the SLOs apart in the rate panel.
var svgDashes = []string{"", "6 3", "2 2", "8 3 2 3", "1 3", "12 4"}

// SVG draws a backtest as a self-contained 960x540 SVG chart: green's
// weight under the policy and as recorded (top), each color's pooled
// bad-request rate per SLO (bottom) and the replay's decisions as vertical
// markers across both. The output depends only on r.
func SVG(r *Report) []byte {
	if r == nil {
		r = &Report{}
	}
	c := &svgChart{r: r}
	c.scaleX()
	c.header()
	c.weightPanel()
	c.ratePanel()
	c.xAxis()
	c.decisions()
	c.b.WriteString("</svg>\n")
	return c.b.Bytes()
}

type svgChart struct {
	b bytes.Buffer
	r *Report
	// t0 and t1 are the x axis's ends; hasX is false without a timeline.
	t0, t1 time.Time
	hasX   bool
	// origin is the instant offsets are counted from.
	origin time.Time
}

// svgPt is a point of a line in viewBox units; !ok breaks the line.
type svgPt struct {
	x, y float64
	ok   bool
}

func (c *svgChart) scaleX() {
	r := c.r
	for i, p := range r.Timeline {
		if i == 0 || p.At.Before(c.t0) {
			c.t0 = p.At
		}
		if i == 0 || p.At.After(c.t1) {
			c.t1 = p.At
		}
	}
	c.hasX = len(r.Timeline) > 0
	if c.hasX && !c.t1.After(c.t0) {
		c.t0, c.t1 = c.t0.Add(-30*time.Second), c.t1.Add(30*time.Second)
	}
	switch {
	case !r.CandidateFirst.IsZero():
		c.origin = r.CandidateFirst
	case c.hasX:
		c.origin = r.Timeline[0].At
	default:
		c.origin = r.From
	}
}

func (c *svgChart) x(t time.Time) float64 {
	f := float64(t.Sub(c.t0)) / float64(c.t1.Sub(c.t0))
	return svgPlotL + (svgPlotR-svgPlotL)*f
}

func (c *svgChart) printf(format string, args ...any) { fmt.Fprintf(&c.b, format, args...) }

func (c *svgChart) header() {
	r := c.r
	title := fmt.Sprintf("splitter policy backtest: %s on %s/%s",
		svgTrunc(r.Policy, 40), svgTrunc(r.Namespace, 40), svgTrunc(r.Workload, 48))
	start := ""
	if !c.origin.IsZero() {
		start = "00:00:00 = " + c.origin.UTC().Format("2006-01-02 15:04:05 UTC")
	}
	sub := "outcome: " + svgOr(r.Outcome, "unknown")
	if d := r.Decided; d != nil {
		sub += fmt.Sprintf(" \u2014 %s at %s on step %d (%d%%)", d.Phase, d.After, d.Step, d.Weight)
		if d.Reason != "" {
			sub += ": " + svgTrunc(d.Reason, 60)
		}
	}
	c.printf(`<?xml version="1.0" encoding="UTF-8"?>` + "\n")
	c.printf(`<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 %s %s" width="%s" height="%s" font-family="sans-serif" font-size="11" fill="%s">`+"\n",
		svgNum(svgWidth), svgNum(svgHeight), svgNum(svgWidth), svgNum(svgHeight), svgInk)
	c.printf("<title>%s</title>\n", svgEsc(title+" ("+start+"); "+sub))
	c.printf(`<rect width="%s" height="%s" fill="#ffffff"/>`+"\n", svgNum(svgWidth), svgNum(svgHeight))
	// A title too long for the width is squeezed to fit.
	fit := ""
	if w := svgTextWidth(title, 16*0.96) + 12 + svgTextWidth(start, 12*0.96); w > svgWidth-svgPlotL-16 {
		fit = fmt.Sprintf(` textLength="%s" lengthAdjust="spacingAndGlyphs"`, svgNum(svgWidth-svgPlotL-16))
	}
	c.printf(`<text x="%s" y="24" font-size="16" font-weight="bold"%s>%s`, svgNum(svgPlotL), fit, svgEsc(title))
	if start != "" {
		c.printf(`<tspan dx="12" font-size="12" font-weight="normal" fill="#666666">%s</tspan>`, svgEsc(start))
	}
	c.printf("</text>\n")
	c.printf(`<text x="%s" y="44" font-size="12">%s</text>`+"\n", svgNum(svgPlotL), svgEsc(sub))
}

// frame draws a panel's box and horizontal grid with its y labels; ticks
// are values in [0, top], labelled with dec decimals.
func (c *svgChart) frame(y0, y1, top float64, ticks []float64, dec int, axis string) {
	for _, v := range ticks {
		y := y1 - (y1-y0)*v/top
		c.printf(`<line x1="%s" y1="%s" x2="%s" y2="%s" stroke="%s"/>`+"\n",
			svgNum(svgPlotL), svgNum(y), svgNum(svgPlotR), svgNum(y), svgGrid)
		c.printf(`<text x="%s" y="%s" text-anchor="end" font-size="10">%s</text>`+"\n",
			svgNum(svgPlotL-5), svgNum(y+3.5), strconv.FormatFloat(v, 'f', dec, 64))
	}
	mid := (y0 + y1) / 2
	c.printf(`<text x="16" y="%s" text-anchor="middle" transform="rotate(-90 16 %s)">%s</text>`+"\n",
		svgNum(mid), svgNum(mid), svgEsc(axis))
}

func (c *svgChart) box(y0, y1 float64) {
	c.printf(`<rect x="%s" y="%s" width="%s" height="%s" fill="none" stroke="%s"/>`+"\n",
		svgNum(svgPlotL), svgNum(y0), svgNum(svgPlotR-svgPlotL), svgNum(y1-y0), svgInk)
	if !c.hasX {
		c.printf(`<text x="%s" y="%s" text-anchor="middle" font-size="14" fill="#888888">no data</text>`+"\n",
			svgNum((svgPlotL+svgPlotR)/2), svgNum((y0+y1)/2+5))
	}
}

func (c *svgChart) weightPanel() {
	r := c.r
	c.frame(svgTopY0, svgTopY1, 100, []float64{0, 25, 50, 75, 100}, 0, "green weight (%)")
	c.xGrid(svgTopY0, svgTopY1)
	y := func(w float64) float64 {
		return svgTopY1 - (svgTopY1-svgTopY0)*math.Max(0, math.Min(100, w))/100
	}
	policy := make([]svgPt, len(r.Timeline))
	recorded := make([]svgPt, len(r.Timeline))
	for i, p := range r.Timeline {
		x := c.x(p.At)
		policy[i] = svgPt{x, y(p.PolicyWeight), svgFinite(p.PolicyWeight)}
		recorded[i] = svgPt{x, y(p.RecordedWeight), svgFinite(p.RecordedWeight)}
	}
	c.line(recorded, false, svgRecorded, "5 3", 1.5, "recorded")
	c.line(policy, true, svgGreen, "", 2, "policy")
	c.box(svgTopY0, svgTopY1)
	ly := svgTopY0 + 6
	c.legend(ly, svgGreen, "", 2, "policy weight ("+svgOr(r.Candidate, "green")+")")
	c.legend(ly+svgLegendRowH, svgRecorded, "5 3", 1.5, "recorded weight")
}

type svgSeries struct {
	label, color, dash string
	pts                []svgPt
}

// rates returns each (SLO, color)'s bad-request rate in percent pooled
// over the trailing svgPool points, with the largest.
func (c *svgChart) rates() (series []svgSeries, rates [][]float64, hi float64) {
	r := c.r
	seen := map[string]bool{}
	var slos []string
	for _, p := range r.Timeline {
		for slo := range p.Bad {
			if !seen[slo] {
				seen[slo] = true
				slos = append(slos, slo)
			}
		}
	}
	sort.Strings(slos)
	colors := []struct {
		c     splitterv1.Color
		name  string
		color string
	}{
		{splitterv1.Blue, svgOr(r.Live, "blue"), svgBlue},
		{splitterv1.Green, svgOr(r.Candidate, "green"), svgGreen},
	}
	for i, slo := range slos {
		for _, col := range colors {
			rs := make([]float64, len(r.Timeline))
			for j, p := range r.Timeline {
				rs[j] = math.NaN()
				if req := p.Requests[col.c]; !svgFinite(req) || req <= 0 {
					continue
				}
				var bad, req float64
				for k := svgMax0(j - svgPool + 1); k <= j; k++ {
					b, q := r.Timeline[k].Bad[slo][col.c], r.Timeline[k].Requests[col.c]
					if svgFinite(b) && svgFinite(q) && q > 0 {
						bad, req = bad+math.Max(0, b), req+q
					}
				}
				rate := 100 * bad / req
				if !svgFinite(rate) {
					continue
				}
				rs[j] = rate
				hi = math.Max(hi, rate)
			}
			series = append(series, svgSeries{
				label: slo + " " + col.name,
				color: col.color,
				dash:  svgDashes[i%len(svgDashes)],
			})
			rates = append(rates, rs)
		}
	}
	return series, rates, hi
}

func (c *svgChart) ratePanel() {
	r := c.r
	series, rates, hi := c.rates()
	top, step, dec := svgNiceScale(math.Max(1, hi))
	var ticks []float64
	for v := 0.0; v <= top+step/2; v += step {
		ticks = append(ticks, math.Round(v/step)*step)
	}
	c.frame(svgBotY0, svgBotY1, top, ticks, dec, "bad-request rate (%, 5-point pooled)")
	c.xGrid(svgBotY0, svgBotY1)
	for i, s := range series {
		pts := make([]svgPt, len(r.Timeline))
		for j, p := range r.Timeline {
			v := rates[i][j]
			pts[j] = svgPt{c.x(p.At), svgBotY1 - (svgBotY1-svgBotY0)*v/top, !math.IsNaN(v)}
		}
		c.line(pts, false, s.color, s.dash, 1.5, "rate")
	}
	c.box(svgBotY0, svgBotY1)
	rows := int((svgBotY1 - svgBotY0 - 6) / svgLegendRowH)
	for i, s := range series {
		y := svgBotY0 + 6 + float64(i)*svgLegendRowH
		if i == rows-1 && len(series) > rows {
			c.printf(`<text x="%s" y="%s" font-size="10">+%d more</text>`+"\n",
				svgNum(svgLegendX), svgNum(y+3.5), len(series)-i)
			break
		}
		c.legend(y, s.color, s.dash, 1.5, s.label)
	}
}

func (c *svgChart) legend(y float64, color, dash string, width float64, label string) {
	c.printf(`<line x1="%s" y1="%s" x2="%s" y2="%s" stroke="%s" stroke-width="%s"%s/>`,
		svgNum(svgLegendX), svgNum(y), svgNum(svgLegendX+22), svgNum(y), color, svgNum(width), svgDashAttr(dash))
	c.printf(`<text x="%s" y="%s" font-size="10">%s<title>%s</title></text>`+"\n",
		svgNum(svgLegendX+28), svgNum(y+3.5), svgEsc(svgTruncMid(label, 30)), svgEsc(label))
}

// line draws pts as a path broken where !ok, as steps (each value held
// until the next point) if step; lone points are dots.
func (c *svgChart) line(pts []svgPt, step bool, color, dash string, width float64, class string) {
	var d strings.Builder
	var dots []svgPt
	for i := 0; i < len(pts); {
		if !pts[i].ok {
			i++
			continue
		}
		j := i
		for j+1 < len(pts) && pts[j+1].ok {
			j++
		}
		if i == j {
			dots = append(dots, pts[i])
			i++
			continue
		}
		fmt.Fprintf(&d, "M%s %s", svgNum(pts[i].x), svgNum(pts[i].y))
		for k := i + 1; k <= j; k++ {
			if step {
				fmt.Fprintf(&d, "H%s", svgNum(pts[k].x))
				if pts[k].y != pts[k-1].y {
					fmt.Fprintf(&d, "V%s", svgNum(pts[k].y))
				}
			} else {
				fmt.Fprintf(&d, "L%s %s", svgNum(pts[k].x), svgNum(pts[k].y))
			}
		}
		i = j + 1
	}
	if d.Len() > 0 {
		c.printf(`<path class="%s" d="%s" fill="none" stroke="%s" stroke-width="%s" stroke-linejoin="round"%s/>`+"\n",
			class, d.String(), color, svgNum(width), svgDashAttr(dash))
	}
	for _, p := range dots {
		c.printf(`<circle class="%s" cx="%s" cy="%s" r="%s" fill="%s"/>`+"\n",
			class, svgNum(p.x), svgNum(p.y), svgNum(width), color)
	}
}

// xTicks are the instants to label: whole steps from the origin.
func (c *svgChart) xTicks() []time.Time {
	if !c.hasX {
		return nil
	}
	span := c.t1.Sub(c.t0)
	step := time.Duration(0)
	for _, s := range []time.Duration{
		time.Second, 2 * time.Second, 5 * time.Second, 10 * time.Second, 15 * time.Second, 30 * time.Second,
		time.Minute, 2 * time.Minute, 5 * time.Minute, 10 * time.Minute, 15 * time.Minute, 30 * time.Minute,
		time.Hour, 2 * time.Hour, 3 * time.Hour, 6 * time.Hour, 12 * time.Hour, 24 * time.Hour,
	} {
		if span/s <= 8 {
			step = s
			break
		}
	}
	if step == 0 {
		step = (span/8/(24*time.Hour) + 1) * 24 * time.Hour
	}
	from := c.t0.Sub(c.origin)
	k := from / step
	if from > 0 && from%step != 0 {
		k++
	}
	var ticks []time.Time
	for t := c.origin.Add(k * step); !t.After(c.t1) && len(ticks) < 20; t = t.Add(step) {
		ticks = append(ticks, t)
	}
	return ticks
}

func (c *svgChart) xGrid(y0, y1 float64) {
	for _, t := range c.xTicks() {
		x := svgNum(c.x(t))
		c.printf(`<line x1="%s" y1="%s" x2="%s" y2="%s" stroke="%s"/>`+"\n", x, svgNum(y0), x, svgNum(y1), svgGrid)
	}
}

func (c *svgChart) xAxis() {
	for _, t := range c.xTicks() {
		x := svgNum(c.x(t))
		c.printf(`<line x1="%s" y1="%s" x2="%s" y2="%s" stroke="%s"/>`, x, svgNum(svgBotY1), x, svgNum(svgBotY1+4), svgInk)
		c.printf(`<text x="%s" y="%s" text-anchor="middle" font-size="10">%s</text>`+"\n",
			x, svgNum(svgBotY1+16), Offset(t.Sub(c.origin)))
	}
	what := "time since the candidate's first traffic (hh:mm:ss)"
	if c.r.CandidateFirst.IsZero() {
		what = "time since the window's start (hh:mm:ss)"
	}
	c.printf(`<text x="%s" y="%s" text-anchor="middle">%s</text>`+"\n",
		svgNum((svgPlotL+svgPlotR)/2), svgNum(svgBotY1+36), svgEsc(what))
}

type svgMark struct {
	d       Decision
	x       float64
	color   string
	decided bool
}

func svgSame(a, b *Decision) bool {
	return a.At.Equal(b.At) && a.Phase == b.Phase && a.Reason == b.Reason && a.Step == b.Step && a.Weight == b.Weight
}

// decisions draws a marker across both panels at each decision in the
// window and labels as many as fit in the band between the panels.
func (c *svgChart) decisions() {
	r := c.r
	if !c.hasX {
		return
	}
	in := func(t time.Time) bool { return !t.Before(c.t0) && !t.After(c.t1) }
	var marks []svgMark
	found := false
	for _, d := range r.Decisions {
		if !in(d.At) {
			continue
		}
		m := svgMark{d: d, x: c.x(d.At), color: svgGrey}
		switch d.Phase {
		case splitterv1.PhaseRollingBack, splitterv1.PhaseRolledBack:
			m.color = svgRed
		case splitterv1.PhasePromoting:
			m.color = svgDarkGreen
		}
		if r.Decided != nil && !found && svgSame(&d, r.Decided) {
			m.decided, found = true, true
		}
		marks = append(marks, m)
	}
	if d := r.Decided; d != nil && !found && in(d.At) {
		color := svgGrey
		switch d.Phase {
		case splitterv1.PhaseRollingBack, splitterv1.PhaseRolledBack:
			color = svgRed
		case splitterv1.PhasePromoting:
			color = svgDarkGreen
		}
		marks = append(marks, svgMark{d: *d, x: c.x(d.At), color: color, decided: true})
	}
	sort.SliceStable(marks, func(i, j int) bool { return marks[i].d.At.Before(marks[j].d.At) })
	// Grey markers first so that the others are drawn over them.
	for pass := 0; pass < 2; pass++ {
		for _, m := range marks {
			if (m.color == svgGrey) != (pass == 0) {
				continue
			}
			width := 1.5
			if m.color == svgGrey {
				width = 1
			}
			d := m.d
			tip := fmt.Sprintf("%s at %s, step %d (%d%%): %s", d.Phase, d.After, d.Step, d.Weight, svgOr(d.Reason, "-"))
			if d.Message != "" {
				tip += " \u2014 " + d.Message
			}
			x := svgNum(m.x)
			c.printf(`<line class="marker" x1="%s" y1="%s" x2="%s" y2="%s" stroke="%s" stroke-width="%s"><title>%s</title></line>`+"\n",
				x, svgNum(svgTopY0), x, svgNum(svgBotY1), m.color, svgNum(width), svgEsc(svgTrunc(tip, 300)))
		}
	}
	c.labels(marks)
}

// labels stagger the markers' labels over the band's rows, the deciding
// one first; a label that fits in no row is left out.
func (c *svgChart) labels(marks []svgMark) {
	order := make([]int, 0, len(marks))
	for i, m := range marks {
		if m.decided {
			order = append([]int{i}, order...)
		} else if m.color != svgGrey || len(marks) <= svgMaxGreyLabels {
			order = append(order, i)
		}
	}
	type span struct{ a, b float64 }
	rows := make([][]span, svgLabelRows)
	for _, i := range order {
		m := marks[i]
		text := svgTrunc(strings.TrimSpace(m.d.Reason+" "+m.d.After.String()), 40)
		w := svgTextWidth(text, svgLabelSize)
		s, anchor, tx := span{m.x + 3, m.x + 3 + w}, "start", m.x+3
		if s.b > svgWidth-4 {
			s, anchor, tx = span{m.x - 3 - w, m.x - 3}, "end", m.x-3
		}
		row := -1
		for k := 0; k < svgLabelRows && row < 0; k++ {
			free := true
			for _, o := range rows[k] {
				if s.a < o.b+4 && o.a < s.b+4 {
					free = false
					break
				}
			}
			if free {
				row = k
			}
		}
		if row < 0 {
			continue
		}
		rows[row] = append(rows[row], s)
		color := m.color
		if color == svgGrey {
			color = "#666666"
		}
		weight := ""
		if m.decided {
			weight = ` font-weight="bold"`
		}
		c.printf(`<text class="label" x="%s" y="%s" text-anchor="%s" font-size="%s" fill="%s"%s stroke="#ffffff" stroke-width="3" stroke-linejoin="round" paint-order="stroke">%s</text>`+"\n",
			svgNum(tx), svgNum(svgLabelY0+float64(row)*svgLabelRowH), anchor, svgNum(svgLabelSize), color, weight, svgEsc(text))
	}
}

// svgNiceScale returns an axis top of at least hi, its tick step (1, 2,
// 2.5 or 5 times a power of ten, about five ticks) and the decimals the
// ticks need.
func svgNiceScale(hi float64) (top, step float64, dec int) {
	raw := hi / 5
	exp := math.Floor(math.Log10(raw))
	f := raw / math.Pow(10, exp)
	nf := 10.0
	for _, n := range []float64{1, 2, 2.5, 5} {
		if f <= n+1e-9 {
			nf = n
			break
		}
	}
	if nf == 10 {
		nf, exp = 1, exp+1
	}
	step = nf * math.Pow(10, exp)
	top = math.Ceil(hi/step-1e-9) * step
	dec = int(math.Max(0, -exp))
	if nf == 2.5 {
		dec++
	}
	return top, step, dec
}

// svgNum formats a coordinate with one decimal, without a trailing ".0".
func svgNum(x float64) string {
	if math.IsNaN(x) || math.IsInf(x, 0) {
		return "0"
	}
	s := strconv.FormatFloat(x, 'f', 1, 64)
	s = strings.TrimSuffix(s, ".0")
	if s == "-0" {
		s = "0"
	}
	return s
}

func svgDashAttr(dash string) string {
	if dash == "" {
		return ""
	}
	return ` stroke-dasharray="` + dash + `"`
}

// svgEsc escapes text for an element's content.
func svgEsc(s string) string {
	var b strings.Builder
	_ = xml.EscapeText(&b, []byte(s))
	return b.String()
}

// svgTrunc shortens s to at most n runes, marking the cut with an ellipsis.
func svgTrunc(s string, n int) string {
	rs := []rune(s)
	if len(rs) <= n {
		return s
	}
	return string(rs[:n-1]) + "\u2026"
}

// svgTruncMid shortens s to at most n runes by cutting out its middle,
// which keeps both the SLO and the Deployment of a legend's label.
func svgTruncMid(s string, n int) string {
	rs := []rune(s)
	if len(rs) <= n {
		return s
	}
	head := (n - 1) / 2
	return string(rs[:head]) + "\u2026" + string(rs[len(rs)-(n-1-head):])
}

// svgTextWidth estimates the width of s set in sans-serif at size.
func svgTextWidth(s string, size float64) float64 {
	return float64(len([]rune(s))) * size * 0.6
}

func svgOr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func svgFinite(f float64) bool { return !math.IsNaN(f) && !math.IsInf(f, 0) }

func svgMax0(i int) int {
	if i < 0 {
		return 0
	}
	return i
}
