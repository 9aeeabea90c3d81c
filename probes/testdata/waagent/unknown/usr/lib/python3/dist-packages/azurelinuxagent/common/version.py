garbage ((( 
