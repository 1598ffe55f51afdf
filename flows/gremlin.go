package flows

import (
	"fmt"
	"math"
	"net"
	"net/netip"
	"strconv"
	"strings"
)

// Node is a capture target as a Skydive topology node, the answer to
// G.V().
type Node struct {
	ID       string       `json:"ID"`
	Host     string       `json:"Host"`
	Metadata NodeMetadata `json:"Metadata"`
}

// NodeMetadata is what G.V().Has(...) matches besides ID and Host.
type NodeMetadata struct {
	Name string `json:"Name"`
	Type string `json:"Type"`
	Path string `json:"Path,omitempty"`
	TID  string `json:"TID"`
}

// Source is what a query starts from.
type Source uint8

const (
	_           Source = iota
	SourceNodes        // G.V()
	SourceFlows        // G.Flows()
)

// QueryError is a query this package does not answer: a syntax error, an
// unknown key, or a step it does not support (Step names it). A server
// answers it with 400 Bad Request and Error() as the message.
type QueryError struct {
	Pos  int    // byte offset in the query
	Step string // the unsupported step or predicate, as written; "" for other errors
	Msg  string
}

func (e *QueryError) Error() string {
	if e.Step != "" {
		s := fmt.Sprintf("unsupported step %q at %d", e.Step, e.Pos)
		if e.Msg != "" {
			s += ": " + e.Msg
		}
		return s
	}
	return fmt.Sprintf("gremlin: %s at %d", e.Msg, e.Pos)
}

// Query is a parsed query of the Gremlin subset Skydive's users type most:
//
//	G.V() | G.Flows()            (also g.)
//	.Has('Key', value, ...)      key/value pairs, all must match; chained
//	.Has('Key')                  the key has a value
//	.Limit(n)                    the first n
//	.Count()                     the number, as the last step
//
// Values are 'strings', "strings" or numbers. Flow keys are dotted paths
// into the flow JSON (Network.A, Transport.B, ICMP.Type, Metric.ABBytes,
// LayersPath, NodeTID, TrackingID, UUID, ...); Link, Network and Transport
// alone match either end. Node keys are ID, Host and the Metadata keys
// (Name, Type, Path, TID, also as Metadata.Name ...). Step names are
// matched without regard to case. An IP or MAC address matches in any of
// its spellings (2001:DB8::0:1, 02-00-00-00-00-0A). A number matches a numeric field of the
// same value or a string field that reads the same, and a string matches
// a numeric field when it parses as that number.
//
// A Query is immutable and may be used from several goroutines.
type Query struct {
	Source Source
	steps  []step
	count  bool
}

type step struct {
	conds []cond // Has; nil for Limit
	limit int
}

type cond struct {
	get    func(any) fields
	exists bool // Has('Key')
	val    value
}

// value is a literal of the query, or a field of a flow or node.
type value struct {
	s     string // a string, or a number as written
	n     float64
	isNum bool
	// norm is a string literal that is an IP or MAC address in the form
	// flows show it ("2001:DB8::0:1" → "2001:db8::1"), so either matches.
	norm string
}

// normalize sets v.norm if v is an address.
func (v *value) normalize() {
	if a, err := netip.ParseAddr(v.s); err == nil {
		v.norm = a.String()
	} else if m, err := net.ParseMAC(v.s); err == nil {
		v.norm = m.String()
	}
}

// fields are the values of one key: two for the either-end keys.
type fields struct {
	v [2]value
	n int
}

func one(v value) fields { return fields{v: [2]value{v}, n: 1} }
func str(s string) fields {
	if s == "" {
		return fields{}
	}
	return one(value{s: s})
}
func num(n int64) fields { return one(value{n: float64(n), isNum: true}) }

// ParseQuery parses q; its error is a *QueryError.
func ParseQuery(q string) (*Query, error) {
	p := parser{lex: lexer{src: q}}
	return p.query()
}

// Evaluate parses and evaluates q: see Query.Eval.
func Evaluate(q string, nodes func() []Node, flows func() []Flow) (any, error) {
	query, err := ParseQuery(q)
	if err != nil {
		return nil, err
	}
	return query.Eval(nodes, flows), nil
}

// Eval answers the query: a []Node (from nodes, for G.V()), a []Flow (from
// flows, for G.Flows()), or an int for Count; the slices are never nil, so
// they encode as JSON arrays. Only the function of the query's source is
// called; a nil function means none.
func (q *Query) Eval(nodes func() []Node, flows func() []Flow) any {
	switch q.Source {
	case SourceNodes:
		var ns []Node
		if nodes != nil {
			ns = nodes()
		}
		ns = q.MatchNodes(ns)
		if q.count {
			return len(ns)
		}
		return ns
	default:
		var fs []Flow
		if flows != nil {
			fs = flows()
		}
		fs = q.MatchFlows(fs)
		if q.count {
			return len(fs)
		}
		return fs
	}
}

// MatchNodes returns the nodes the query's Has and Limit steps keep, in
// order, in a new slice; ns is not changed.
func (q *Query) MatchNodes(ns []Node) []Node {
	return match(q, ns)
}

// MatchFlows returns the flows the query's Has and Limit steps keep.
func (q *Query) MatchFlows(fs []Flow) []Flow {
	return match(q, fs)
}

func match[T any](q *Query, in []T) []T {
	// Never nil: an empty answer is [] in JSON. Filtered in place below.
	out := append(make([]T, 0, len(in)), in...)
	for _, st := range q.steps {
		if st.conds == nil {
			out = out[:min(len(out), st.limit)]
			continue
		}
		kept := out[:0]
		for i := range out {
			if st.matches(&out[i]) {
				kept = append(kept, out[i])
			}
		}
		out = kept
	}
	return out
}

func (st *step) matches(x any) bool {
	for _, c := range st.conds {
		fs := c.get(x)
		ok := false
		for _, fv := range fs.v[:fs.n] {
			if c.exists || equal(fv, c.val) {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	return true
}

func equal(field, lit value) bool {
	switch {
	case field.isNum && lit.isNum:
		return field.n == lit.n
	case field.isNum:
		n, err := strconv.ParseFloat(strings.TrimSpace(lit.s), 64)
		return err == nil && n == field.n
	case lit.isNum:
		return field.s == lit.s || field.s == strconv.FormatFloat(lit.n, 'f', -1, 64)
	}
	return field.s == lit.s || lit.norm != "" && field.s == lit.norm
}

// Keys of G.Flows().Has.
var flowKeys = map[string]func(*Flow) fields{
	"UUID":        func(f *Flow) fields { return str(f.UUID) },
	"TrackingID":  func(f *Flow) fields { return str(f.TrackingID) },
	"NodeTID":     func(f *Flow) fields { return str(f.NodeTID) },
	"LayersPath":  func(f *Flow) fields { return str(f.LayersPath) },
	"Application": func(f *Flow) fields { return str(f.Application) },
	"Interface":   func(f *Flow) fields { return str(f.Interface) },
	"Start":       func(f *Flow) fields { return num(f.Start) },
	"Last":        func(f *Flow) fields { return num(f.Last) },

	"ICMP.Type": func(f *Flow) fields { return icmp(f, func(i *ICMPLayer) fields { return str(i.Type) }) },
	"ICMP.Code": func(f *Flow) fields { return icmp(f, func(i *ICMPLayer) fields { return num(int64(i.Code)) }) },
	"ICMP.ID":   func(f *Flow) fields { return icmp(f, func(i *ICMPLayer) fields { return num(int64(i.ID)) }) },
}

func icmp(f *Flow, get func(*ICMPLayer) fields) fields {
	if f.ICMP == nil {
		return fields{}
	}
	return get(f.ICMP)
}

func init() {
	for name, get := range map[string]func(*Flow) *Layer{
		"Link":    func(f *Flow) *Layer { return f.Link },
		"Network": func(f *Flow) *Layer { return f.Network },
	} {
		flowKeys[name] = func(f *Flow) fields {
			if l := get(f); l != nil {
				return fields{v: [2]value{{s: l.A}, {s: l.B}}, n: 2}
			}
			return fields{}
		}
		for field, val := range map[string]func(*Layer) fields{
			"Protocol": func(l *Layer) fields { return str(l.Protocol) },
			"A":        func(l *Layer) fields { return str(l.A) },
			"B":        func(l *Layer) fields { return str(l.B) },
			"ID":       func(l *Layer) fields { return num(l.ID) },
		} {
			flowKeys[name+"."+field] = func(f *Flow) fields {
				if l := get(f); l != nil {
					return val(l)
				}
				return fields{}
			}
		}
	}
	flowKeys["Transport"] = func(f *Flow) fields {
		if t := f.Transport; t != nil {
			return fields{v: [2]value{{n: float64(t.A), isNum: true}, {n: float64(t.B), isNum: true}}, n: 2}
		}
		return fields{}
	}
	for field, val := range map[string]func(*TransportLayer) fields{
		"Protocol": func(t *TransportLayer) fields { return str(t.Protocol) },
		"A":        func(t *TransportLayer) fields { return num(t.A) },
		"B":        func(t *TransportLayer) fields { return num(t.B) },
		"ID":       func(t *TransportLayer) fields { return num(t.ID) },
	} {
		flowKeys["Transport."+field] = func(f *Flow) fields {
			if t := f.Transport; t != nil {
				return val(t)
			}
			return fields{}
		}
	}
	for name, get := range map[string]func(*Flow) *Metric{
		"Metric":           func(f *Flow) *Metric { return &f.Metric },
		"LastUpdateMetric": func(f *Flow) *Metric { return &f.LastUpdateMetric },
	} {
		for field, val := range map[string]func(*Metric) int64{
			"ABPackets": func(m *Metric) int64 { return m.ABPackets },
			"ABBytes":   func(m *Metric) int64 { return m.ABBytes },
			"BAPackets": func(m *Metric) int64 { return m.BAPackets },
			"BABytes":   func(m *Metric) int64 { return m.BABytes },
			"Start":     func(m *Metric) int64 { return m.Start },
			"Last":      func(m *Metric) int64 { return m.Last },
		} {
			flowKeys[name+"."+field] = func(f *Flow) fields { return num(val(get(f))) }
		}
	}
}

// Keys of G.V().Has.
var nodeKeys = map[string]func(*Node) fields{
	"ID":   func(n *Node) fields { return str(n.ID) },
	"Host": func(n *Node) fields { return str(n.Host) },
}

func init() {
	for field, val := range map[string]func(*NodeMetadata) string{
		"Name": func(m *NodeMetadata) string { return m.Name },
		"Type": func(m *NodeMetadata) string { return m.Type },
		"Path": func(m *NodeMetadata) string { return m.Path },
		"TID":  func(m *NodeMetadata) string { return m.TID },
	} {
		get := func(n *Node) fields { return str(val(&n.Metadata)) }
		nodeKeys[field] = get
		nodeKeys["Metadata."+field] = get
	}
}

// getter returns the accessor of key for the query's source, or nil.
func getter(src Source, key string) func(any) fields {
	switch src {
	case SourceNodes:
		if get, ok := nodeKeys[key]; ok {
			return func(x any) fields { return get(x.(*Node)) }
		}
	case SourceFlows:
		if get, ok := flowKeys[key]; ok {
			return func(x any) fields { return get(x.(*Flow)) }
		}
	}
	return nil
}

// Tokens.

type tokKind uint8

const (
	tEOF tokKind = iota + 1
	tIdent
	tString
	tNumber
	tDot
	tLParen
	tRParen
	tComma
)

type token struct {
	kind tokKind
	pos  int
	text string // an identifier, a string's value, a number as written
	num  float64
}

type lexer struct {
	src string
	pos int
}

func (l *lexer) next() (token, error) {
	for l.pos < len(l.src) && strings.IndexByte(" \t\r\n", l.src[l.pos]) >= 0 {
		l.pos++
	}
	start := l.pos
	if l.pos == len(l.src) {
		return token{kind: tEOF, pos: start}, nil
	}
	c := l.src[l.pos]
	switch {
	case c == '.':
		l.pos++
		return token{kind: tDot, pos: start}, nil
	case c == '(':
		l.pos++
		return token{kind: tLParen, pos: start}, nil
	case c == ')':
		l.pos++
		return token{kind: tRParen, pos: start}, nil
	case c == ',':
		l.pos++
		return token{kind: tComma, pos: start}, nil
	case c == '\'' || c == '"':
		var b strings.Builder
		for l.pos++; l.pos < len(l.src); l.pos++ {
			ch := l.src[l.pos]
			switch {
			case ch == c:
				l.pos++
				return token{kind: tString, pos: start, text: b.String()}, nil
			case ch == '\\' && l.pos+1 < len(l.src):
				l.pos++
				b.WriteByte(l.src[l.pos])
			default:
				b.WriteByte(ch)
			}
		}
		return token{}, &QueryError{Pos: start, Msg: "unterminated string"}
	case c == '-' || c == '+' || isDigit(c):
		l.pos++
		for l.pos < len(l.src) && (isDigit(l.src[l.pos]) || strings.IndexByte(".eE+-", l.src[l.pos]) >= 0) {
			// A sign inside a number only follows an exponent.
			if ch := l.src[l.pos]; (ch == '+' || ch == '-') && l.src[l.pos-1] != 'e' && l.src[l.pos-1] != 'E' {
				break
			}
			l.pos++
		}
		text := l.src[start:l.pos]
		n, err := strconv.ParseFloat(text, 64)
		if err != nil || math.IsInf(n, 0) {
			return token{}, &QueryError{Pos: start, Msg: fmt.Sprintf("bad number %q", text)}
		}
		return token{kind: tNumber, pos: start, text: text, num: n}, nil
	case isLetter(c):
		for l.pos < len(l.src) && (isLetter(l.src[l.pos]) || isDigit(l.src[l.pos])) {
			l.pos++
		}
		return token{kind: tIdent, pos: start, text: l.src[start:l.pos]}, nil
	}
	return token{}, &QueryError{Pos: start, Msg: fmt.Sprintf("unexpected %q", rune(c))}
}

func isDigit(c byte) bool  { return '0' <= c && c <= '9' }
func isLetter(c byte) bool { return 'a' <= c|0x20 && c|0x20 <= 'z' || c == '_' }

// Parser.

type parser struct {
	lex  lexer
	tok  token // current token
	peek *token
}

func (p *parser) advance() error {
	if p.peek != nil {
		p.tok, p.peek = *p.peek, nil
		return nil
	}
	t, err := p.lex.next()
	p.tok = t
	return err
}

func (p *parser) lookahead() (token, error) {
	if p.peek == nil {
		t, err := p.lex.next()
		if err != nil {
			return token{}, err
		}
		p.peek = &t
	}
	return *p.peek, nil
}

func (p *parser) expect(k tokKind, what string) error {
	if err := p.advance(); err != nil {
		return err
	}
	if p.tok.kind != k {
		return p.unexpected(what)
	}
	return nil
}

func (p *parser) unexpected(what string) error {
	got := "end of query"
	switch p.tok.kind {
	case tIdent:
		got = strconv.Quote(p.tok.text)
	case tString:
		got = "string"
	case tNumber:
		got = "number " + p.tok.text
	case tDot:
		got = `"."`
	case tLParen:
		got = `"("`
	case tRParen:
		got = `")"`
	case tComma:
		got = `","`
	}
	return &QueryError{Pos: p.tok.pos, Msg: fmt.Sprintf("expected %s, got %s", what, got)}
}

func (p *parser) query() (*Query, error) {
	if err := p.expect(tIdent, "G"); err != nil {
		return nil, err
	}
	if p.tok.text != "G" && p.tok.text != "g" {
		return nil, &QueryError{Pos: p.tok.pos, Msg: fmt.Sprintf("query must start with G, not %q", p.tok.text)}
	}
	q := &Query{}
	for first := true; ; first = false {
		if err := p.advance(); err != nil {
			return nil, err
		}
		if p.tok.kind == tEOF && !first {
			return q, nil
		}
		if p.tok.kind != tDot {
			return nil, p.unexpected(`"."`)
		}
		if err := p.expect(tIdent, "a step"); err != nil {
			return nil, err
		}
		name, pos := p.tok.text, p.tok.pos
		args, err := p.args()
		if err != nil {
			return nil, err
		}
		if q.count {
			return nil, &QueryError{Pos: pos, Step: name, Msg: "after Count"}
		}
		if err := q.add(name, pos, args, first); err != nil {
			return nil, err
		}
	}
}

// arg is one argument of a step.
type arg struct {
	pos   int
	val   value
	isStr bool
}

// args parses a step's parenthesized arguments.
func (p *parser) args() ([]arg, error) {
	if err := p.expect(tLParen, `"("`); err != nil {
		return nil, err
	}
	var args []arg
	for {
		if err := p.advance(); err != nil {
			return nil, err
		}
		if p.tok.kind == tRParen && len(args) == 0 {
			return args, nil
		}
		switch p.tok.kind {
		case tString:
			a := arg{pos: p.tok.pos, val: value{s: p.tok.text}, isStr: true}
			a.val.normalize()
			args = append(args, a)
		case tNumber:
			args = append(args, arg{pos: p.tok.pos, val: value{s: p.tok.text, n: p.tok.num, isNum: true}})
		case tIdent:
			// A predicate (Gt(5), Within(...), Regex(...)) or a bare name.
			next, err := p.lookahead()
			if err != nil {
				return nil, err
			}
			if next.kind == tLParen {
				return nil, &QueryError{Pos: p.tok.pos, Step: p.tok.text, Msg: "predicates are not supported"}
			}
			return nil, p.unexpected("a string or a number")
		default:
			return nil, p.unexpected("a string or a number")
		}
		if err := p.advance(); err != nil {
			return nil, err
		}
		switch p.tok.kind {
		case tComma:
		case tRParen:
			return args, nil
		default:
			return nil, p.unexpected(`"," or ")"`)
		}
	}
}

// add appends the step name(args) to q.
func (q *Query) add(name string, pos int, args []arg, first bool) error {
	lower := strings.ToLower(name)
	if first {
		switch lower {
		case "v":
			q.Source = SourceNodes
		case "flows":
			q.Source = SourceFlows
		default:
			return &QueryError{Pos: pos, Step: name, Msg: "a query starts with V() or Flows()"}
		}
		if len(args) > 0 {
			return &QueryError{Pos: pos, Step: name, Msg: "with arguments"}
		}
		return nil
	}
	switch lower {
	case "has":
		if len(args) == 0 {
			return &QueryError{Pos: pos, Msg: "Has needs a key"}
		}
		if len(args) > 1 && len(args)%2 == 1 {
			return &QueryError{Pos: args[len(args)-1].pos, Msg: "Has needs key, value pairs"}
		}
		var conds []cond
		for i := 0; i < len(args); i += 2 {
			k := args[i]
			if !k.isStr {
				return &QueryError{Pos: k.pos, Msg: "a key must be a string"}
			}
			get := getter(q.Source, k.val.s)
			if get == nil {
				return &QueryError{Pos: k.pos, Msg: fmt.Sprintf("unknown key %q", k.val.s)}
			}
			c := cond{get: get, exists: len(args) == 1}
			if !c.exists {
				c.val = args[i+1].val
			}
			conds = append(conds, c)
		}
		q.steps = append(q.steps, step{conds: conds})
	case "limit":
		if len(args) != 1 || !args[0].val.isNum {
			return &QueryError{Pos: pos, Msg: "Limit needs one number"}
		}
		n := args[0].val.n
		if n < 0 || n != math.Trunc(n) || n > math.MaxInt32 {
			return &QueryError{Pos: args[0].pos, Msg: fmt.Sprintf("bad limit %s", args[0].val.s)}
		}
		q.steps = append(q.steps, step{limit: int(n)})
	case "count":
		if len(args) > 0 {
			return &QueryError{Pos: pos, Msg: "Count takes no arguments"}
		}
		q.count = true
	default:
		return &QueryError{Pos: pos, Step: name}
	}
	return nil
}
