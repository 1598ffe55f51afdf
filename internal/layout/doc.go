// Package layout holds only a test: it checks that each package imports
// only the packages of ours its room allows (STYLE.md, "Our layout").
package layout
