module bgrun/sandbox

go 1.26.8
