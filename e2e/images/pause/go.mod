module berth.dev/localbuild/pause

go 1.22
