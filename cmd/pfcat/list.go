package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"unicode/utf8"

	flag "github.com/spf13/pflag"
)

func runList(args []string, g *globals, e *env) error {
	fs := flag.NewFlagSet("pfcat list", flag.ContinueOnError)
	output := fs.StringP("output", "o", "table", "output format: table, or json (the service's list of targets)")
	if help, err := parseCommand(fs, args, g, e, "pfcat [global flags] list [-o json]"); help || err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("list takes no arguments, got %q", fs.Args())
	}
	if *output != "table" && *output != "json" {
		return usagef("-o %s: want table or json", *output)
	}
	s, err := g.service()
	if err != nil {
		return err
	}
	ts, err := s.targets(context.Background())
	if err != nil {
		return fmt.Errorf("list: %w", err)
	}
	if *output == "json" {
		return writeJSON(e.stdout, ts)
	}
	return writeTable(e.stdout, ts)
}

// writeTable writes one line per target. Interfaces are joined by "/",
// as capture's -i takes them.
func writeTable(w io.Writer, ts []target) error {
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tTYPE\tNETNS\tPID\tINTERFACES")
	for _, t := range ts {
		pid := "-" // bindmount targets have no process
		if t.PID > 0 {
			pid = fmt.Sprint(t.PID)
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\n", t.Name, t.Type, t.NetNS, pid, strings.Join(t.Interfaces, "/"))
	}
	return tw.Flush()
}

// writeJSON writes the targets as the service gave them, as one indented
// JSON array.
func writeJSON(w io.Writer, ts []target) error {
	raws := make([]json.RawMessage, len(ts))
	for i, t := range ts {
		raws[i] = t.Raw
	}
	b, err := json.MarshalIndent(raws, "", "  ")
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "%s\n", b)
	return err
}

// findTarget returns the one target named name. Names are unique in one
// list of the built-in discovery, but an external GhostWire may list a
// name under several engine prefixes.
func findTarget(ts []target, name string) (target, error) {
	var found []target
	for _, t := range ts {
		if t.Name == name {
			found = append(found, t)
		}
	}
	switch len(found) {
	case 1:
		return found[0], nil
	case 0:
		names := make([]string, len(ts))
		for i, t := range ts {
			names[i] = t.Name
		}
		if near := nearNames(name, names); len(near) > 0 {
			return target{}, fmt.Errorf("no capture target %q; did you mean %s?", name, strings.Join(near, ", "))
		}
		return target{}, fmt.Errorf("no capture target %q among the %d that pfcat list shows", name, len(ts))
	default:
		var each []string
		for _, t := range found {
			d := fmt.Sprintf("%s netns %d", t.Type, t.NetNS)
			if t.Prefix != "" {
				d += " prefix " + t.Prefix
			}
			each = append(each, d)
		}
		return target{}, fmt.Errorf("capture target %q is ambiguous: %d targets have that name (%s); capture one with --netns", name, len(found), strings.Join(each, "; "))
	}
}

// maxNear is how many near names an error offers.
const maxNear = 5

// nearNames returns the names that are probably what name meant: those
// that contain it or that it contains (ignoring case), then those a few
// typing mistakes away, closest first.
func nearNames(name string, names []string) []string {
	type cand struct {
		name string
		dist int
	}
	low := strings.ToLower(name)
	limit := max(1, utf8.RuneCountInString(name)/3)
	var cs []cand
	for _, n := range names {
		l := strings.ToLower(n)
		switch {
		case strings.Contains(l, low) || strings.Contains(low, l):
			cs = append(cs, cand{n, 0})
		default:
			if d := editDistance(low, l); d <= limit {
				cs = append(cs, cand{n, d})
			}
		}
	}
	slices.SortStableFunc(cs, func(a, b cand) int {
		if a.dist != b.dist {
			return a.dist - b.dist
		}
		return strings.Compare(a.name, b.name)
	})
	var out []string
	for _, c := range cs {
		if len(out) == maxNear {
			break
		}
		if !slices.Contains(out, c.name) {
			out = append(out, c.name)
		}
	}
	return out
}

// editDistance is the optimal string alignment distance of a and b, in
// runes: Levenshtein's, with a swap of two neighbours one mistake, as
// typing makes it.
func editDistance(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	// d[i][j]: distance of ra[:i] and rb[:j].
	d := make([][]int, len(ra)+1)
	for i := range d {
		d[i] = make([]int, len(rb)+1)
		d[i][0] = i
	}
	for j := range d[0] {
		d[0][j] = j
	}
	for i := 1; i <= len(ra); i++ {
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			d[i][j] = min(d[i-1][j]+1, d[i][j-1]+1, d[i-1][j-1]+cost)
			if i > 1 && j > 1 && ra[i-1] == rb[j-2] && ra[i-2] == rb[j-1] {
				d[i][j] = min(d[i][j], d[i-2][j-2]+1)
			}
		}
	}
	return d[len(ra)][len(rb)]
}
