from fadiag.cli import main

main()
