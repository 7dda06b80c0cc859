module bgrun/bench/loadclient

go 1.22
