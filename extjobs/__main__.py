from extjobs.cli.main import main

main()
