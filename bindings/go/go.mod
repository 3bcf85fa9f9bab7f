module github.com/crx580/crx580/bindings/go

go 1.19
