from arlm.cli import main

main()
