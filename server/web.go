package server

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"io/fs"
	"net/http"
	"path"
	"sort"
	"time"
)

// The page: server/web/index.html at "/", its script, style sheet and icon
// at "/web/NAME", embedded in the binary (no build step, no external
// assets). It talks to the API like any other client: /mobyshark,
// /api/v1/captures, /capture over WebSocket (the token as a subprotocol),
// /capture.pcapng for downloads. A browser has to load the page before it
// can learn the token, so the page's paths are the ones to open without
// one (pagePaths).

//go:embed web
var webFS embed.FS

// pageCSP allows the page nothing but its own origin: no inline script or
// style (app.js sets styles through the CSSOM, which CSP does not govern),
// no frames around it, no forms posting anywhere. connect-src 'self'
// covers ws: and wss: to the same host (CSP Level 3, "self" matching).
const pageCSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; " +
	"connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// webFile is one embedded file, ready to serve.
type webFile struct {
	name  string
	body  []byte
	ctype string
	etag  string
}

// webFiles maps a URL path ("/", "/web/app.js") to its file; built once.
var webFiles = loadWebFiles()

// pagePaths are the URL paths of the page, sorted: what a browser fetches
// before the user can type a token.
var pagePaths = func() []string {
	var ps []string
	for p := range webFiles {
		ps = append(ps, p)
	}
	sort.Strings(ps)
	return ps
}()

func loadWebFiles() map[string]*webFile {
	m := map[string]*webFile{}
	err := fs.WalkDir(webFS, "web", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		body, err := webFS.ReadFile(p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(body)
		f := &webFile{name: path.Base(p), body: body, etag: `"` + hex.EncodeToString(sum[:8]) + `"`}
		// Not mime.TypeByExtension: its first call reads the host's
		// mime.types, which cost this package's init 800 KB of memory in
		// 17,000 allocations, for four names known here.
		switch path.Ext(p) {
		case ".html":
			f.ctype = "text/html; charset=utf-8"
		case ".js":
			f.ctype = "text/javascript; charset=utf-8"
		case ".css":
			f.ctype = "text/css; charset=utf-8"
		case ".svg":
			f.ctype = "image/svg+xml"
		default:
			f.ctype = "application/octet-stream"
		}
		url := "/" + p // "/web/app.js"
		if p == "web/index.html" {
			url = "/"
		}
		m[url] = f
		return nil
	})
	if err != nil {
		panic("server: embedded page: " + err.Error()) // the embed is fixed at build time
	}
	return m
}

// registerWeb adds the page's routes to mux: exact paths, so that
// anything else under /web/ is a 404, and "/" does not swallow unknown
// paths.
func registerWeb(mux *http.ServeMux) {
	mux.HandleFunc("GET /{$}", serveWeb)
	mux.HandleFunc("GET /web/{file}", serveWeb)
}

// serveWeb answers one embedded file, with a strict CSP and revalidation
// on every load (Cache-Control no-cache plus an ETag), so a new binary's
// page is never mixed with an old cached script.
func serveWeb(w http.ResponseWriter, r *http.Request) {
	f, ok := webFiles[r.URL.Path]
	if !ok {
		http.NotFound(w, r)
		return
	}
	h := w.Header()
	h.Set("Content-Type", f.ctype)
	h.Set("Content-Security-Policy", pageCSP)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-cache")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
	h.Set("ETag", f.etag)
	// ServeContent answers If-None-Match with 304, HEAD and ranges.
	http.ServeContent(w, r, f.name, time.Time{}, bytes.NewReader(f.body))
}
