// Package layout holds only a test: it checks that each package imports
// only the packages of ours its room allows (README.md, "Layout").
package layout
