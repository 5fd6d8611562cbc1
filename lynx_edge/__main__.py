from lynx_edge.cli import main

main()
