module seam.dev/gotls

go 1.19
