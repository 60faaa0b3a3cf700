module roster.test/gojson

go 1.19
